"""Body validation on /predict: the schema library (spectree + pydantic) vs our numpy validation, one run.

    .venv/bin/python -m bench.openapi_validation [--repeat N]

Prints figures and writes bench/results/openapi_validation.json. Three figures per batch size, in process
(no server): our extract_rows + validate_rows (what /predict runs), pydantic validation of the documented body
model (what spectree runs when it validates), and a Flask test-client request to a view decorated with
spectree validating vs the same view documented with skip_validation vs undecorated (ours inside all).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from flask import Flask, jsonify, request

from mlstack_core.data.generator import FEATURES, generate_frame
from mlstack_core.openapi import _spec, document
from mlstack_core.row_schemas import RowsPayload
from mlstack_core.validation import extract_rows, validate_rows

RESULTS = Path(__file__).resolve().parent / "results" / "openapi_validation.json"


def _payload(n: int) -> dict:
    frame = generate_frame(n, seed=7)
    return {"rows": frame[list(FEATURES)].to_dict("records")}


def _per_call(fn, repeat: int, rounds: int = 5) -> float:
    # The fastest of a few rounds: the machine is shared, and a slower round measures the neighbours.
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(max(1, repeat // rounds)):
            fn()
        best = min(best, (time.perf_counter() - start) / max(1, repeat // rounds))
    return best


def _app() -> Flask:
    app = Flask(__name__)

    def ours():
        rows, _ = extract_rows(request.get_json())
        return jsonify(n=len(validate_rows(rows).features))

    app.add_url_rule("/library", "library", _spec.validate(json=RowsPayload)(ours), methods=["POST"])
    app.add_url_rule("/documented", "documented", document(json=RowsPayload)(ours), methods=["POST"])
    app.add_url_rule("/bare", "bare", ours, methods=["POST"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    client = _app().test_client()
    figures = []
    for n in (1, 100, 1000):
        payload = _payload(n)
        repeat = max(5, args.repeat // max(1, n // 100))
        ours = _per_call(lambda p=payload: validate_rows(extract_rows(p)[0]), repeat)
        library = _per_call(lambda p=payload: RowsPayload.model_validate(p), repeat)
        via_library = _per_call(lambda p=payload: client.post("/library", json=p), repeat)
        via_documented = _per_call(lambda p=payload: client.post("/documented", json=p), repeat)
        via_bare = _per_call(lambda p=payload: client.post("/bare", json=p), repeat)
        row = {"rows": n, "ours_us": ours * 1e6, "pydantic_us": library * 1e6,
               "validation_ratio": library / ours, "request_library_us": via_library * 1e6,
               "request_documented_us": via_documented * 1e6, "request_ratio": via_library / via_documented,
               "request_bare_us": via_bare * 1e6, "wrapper_ratio": via_documented / via_bare}
        figures.append(row)
        print(f"{n:5d} rows: ours {row['ours_us']:9.1f} us, pydantic {row['pydantic_us']:9.1f} us "
              f"(x{row['validation_ratio']:.1f}); request: spectree-validated {row['request_library_us']:9.1f} us, "
              f"documented only {row['request_documented_us']:9.1f} us (x{row['request_ratio']:.2f}), "
              f"undecorated {row['request_bare_us']:9.1f} us (wrapper x{row['wrapper_ratio']:.2f})")
    RESULTS.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "python": platform.python_version(), "machine": platform.machine(),
                                   "figures": figures}, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
