"""Where a serving worker's CPU goes: py-spy samples every Gunicorn worker while wrk drives one-row predictions.

Samples are folded into a few buckets (Gunicorn, Flask/Werkzeug, our hooks, validation, the estimator, JSON, the
prediction writer, ...) by the most specific frame of each stack, so the table reads as "share of busy worker
time". The raw collapsed stacks are kept next to the table (flamegraph-ready) for anyone who wants more.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench.loadgen import run_wrk

log = logging.getLogger("bench")

# Checked in this order: the first bucket any frame of a stack matches gets the sample.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prediction writer thread (documents, BSON, insert_many)", ("_loop (serving/prediction_writer.py)",)),
    ("model watcher / monitor threads", ("_watch (serving/model_store.py)", "serving/quality.py",
                                         "mlstack_core/locks.py")),
    ("estimator: scikit-learn predict", ("sklearn/",)),
    ("estimator: folded linear predict", ("predict (serving/model_store.py)",)),
    ("row validation", ("mlstack_core/validation.py",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("request id hook", ("mlstack_core/request_id.py",)),
    ("queueing the prediction (writer.add, PendingBatch)", ("add (serving/prediction_writer.py)",
                                                             "serving/prediction_writer.py")),
    ("JSON decode of the body", ("get_json", "json/decoder.py", "json/__init__.py")),
    ("JSON encode of the answer (jsonify)", ("jsonify", "json/encoder.py", "flask/json/")),
    ("our route and service code", ("serving/routes.py", "serving/services.py")),
    ("Flask / Werkzeug request machinery", ("flask/", "werkzeug/")),
    ("Gunicorn (accept, HTTP parse, write)", ("gunicorn/",)),
)


def have_py_spy() -> str | None:
    """Path of py-spy (the venv's first), or None."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


def bucket_of(frames: list[str]) -> str:
    """The bucket of one stack (frames root first)."""
    for name, needles in BUCKETS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "other (interpreter, imports, GC, ...)"


def fold(raw: str) -> tuple[dict[str, int], dict[str, int], int]:
    """(samples per bucket, inclusive samples per frame, total samples) of py-spy's raw collapsed output."""
    buckets: dict[str, int] = collections.Counter()
    inclusive: dict[str, int] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        total += n
        buckets[bucket_of(frames)] += n
        for frame in set(frames):
            inclusive[frame] += n
    return dict(buckets), dict(inclusive), total


def profile_workers(
    root_pid: int, url: str, body: bytes, *, seconds: float, connections: int, out_dir: Path, label: str
) -> dict[str, object]:
    """Sample the workers below root_pid while wrk runs; write the stacks and a table; return the buckets."""
    py_spy = have_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not installed: pip install -r bench/requirements.txt")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / "raw" / f"profile-{label}.txt"  # collapsed stacks (flamegraph.pl input), not committed
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(root_pid), "--subprocesses", "--format", "raw", "--nolineno",
            "--rate", "250", "--nonblocking", "--duration", f"{seconds:g}", "--output", str(raw_path)]
    load: dict[str, object] = {}

    def drive() -> None:
        load["wrk"] = run_wrk(url, body, connections=connections, seconds=seconds + 2).as_dict()

    thread = threading.Thread(target=drive)
    thread.start()
    spy = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    thread.join(timeout=seconds + 90)
    if not raw_path.is_file():
        raise RuntimeError(f"py-spy wrote nothing: {spy.stderr[-1500:]}")
    buckets, inclusive, total = fold(raw_path.read_text())
    rows = sorted(buckets.items(), key=lambda kv: -kv[1])
    top = sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]
    lines = [f"# py-spy, {label}: {total} busy samples of the Gunicorn workers at 250 Hz over {seconds:g} s",
             f"# load: {load.get('wrk')}", "", "share  bucket"]
    lines += [f"{100 * n / total:5.1f}% {name}" for name, n in rows]
    lines += ["", "inclusive share of the busiest frames:"]
    lines += [f"{100 * n / total:5.1f}% {frame}" for frame, n in top]
    table_path = out_dir / f"profile-{label}-summary.txt"
    table_path.write_text("\n".join(lines) + "\n")
    log.info("profile of %s written to %s", label, table_path)
    return {"label": label, "samples": total, "load": load.get("wrk"),
            "buckets": {name: round(100 * n / total, 1) for name, n in rows}, "summary_file": str(table_path)}


def run(*, threads: int | None = None, seconds: float = 15.0, tag: str = "") -> list[dict[str, object]]:
    """Profile our serving workers (one-row predictions, 8 clients, through Nginx); figures go to the results."""
    from bench.common import RESULTS_DIR, append_result
    from bench.serving_bench import payloads, wait_all_workers_on
    from bench.stack import BenchStack

    records = []
    body = payloads()["one_row"].body("ours")
    with BenchStack() as stack:
        stack.start_infra()
        version = stack.register_model(seed=1)
        variants = {"ours": stack.start_ours(threads=threads), "floor_flask": stack.start_floor("flask")}
        wait_all_workers_on(variants["ours"], version)
        for name, variant in variants.items():
            result = profile_workers(variant.app.pid, f"{variant.url}/predict", body, seconds=seconds,
                                     connections=8, out_dir=RESULTS_DIR, label=f"{name}-one-row")
            records.append(append_result({"bench": "profile", "variant": name, "threads": threads, "tag": tag,
                                          **result}))
    return records
