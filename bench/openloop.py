"""oha as the open-loop load generator: requests sent at a constant arrival rate, figures back as a dict.

wrk (bench.loadgen) is closed-loop: when the server slows, it sends less, so its percentiles hide queueing
(coordinated omission). ``oha -q RATE --latency-correction`` schedules every request at a fixed time and
measures its latency from that time, so a request that waited for a free connection counts the wait. oha is
built from crates.io by ``bench/tools.sh oha`` (pinned version) on first use; OHA_BIN names another binary.
Every run is bounded in time (``-z``, plus a subprocess timeout) and so in count (rate x seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR


def oha_binary() -> str:
    """The oha to run: OHA_BIN, else the pinned build in .tools (built now if missing)."""
    if os.environ.get("OHA_BIN"):
        return os.environ["OHA_BIN"]
    out = subprocess.run([str(BENCH_DIR / "tools.sh"), "oha"], capture_output=True, text=True, timeout=3600,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def run_oha(url: str, body: bytes, *, rate: float | None, seconds: float, connections: int = 32,
            timeout_s: float = 5.0, oha: str | None = None) -> dict[str, Any]:
    """POST body to url at `rate` requests/s for `seconds` over up to `connections` connections (latency
    corrected); returns requests, achieved req/s, p50/p90/p99/p99.9/max in ms and errors. ``rate=None``: closed
    loop, each connection sends its next request when the answer came (the maximum with oha's own CPU cost)."""
    oha = oha or oha_binary()
    pacing = [] if rate is None else ["-q", f"{rate:.1f}", "--latency-correction"]
    with tempfile.TemporaryDirectory(prefix="bench-oha-") as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        argv = [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds:g}s", *pacing,
                "-w", "-c", str(connections), "-t", f"{timeout_s:g}s", "-m", "POST",
                "-H", "Content-Type: application/json", "-D", str(body_path), url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"oha exited {out.returncode}: {out.stderr[-2000:]}")
    raw = json.loads(out.stdout)
    return parse(raw)


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    """oha's JSON summary as our figures (its latencies are in seconds)."""
    summary = raw["summary"]
    percentiles = raw.get("latencyPercentiles") or {}
    statuses = {str(k): int(v) for k, v in (raw.get("statusCodeDistribution") or {}).items()}
    socket_errors = {str(k): int(v) for k, v in (raw.get("errorDistribution") or {}).items()}
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    answered = sum(statuses.values())

    def ms(key: str) -> float | None:
        value = percentiles.get(key)
        return round(value * 1000, 3) if value is not None else None

    return {
        "requests": answered + sum(socket_errors.values()),
        "ok": ok,
        "errors": answered - ok + sum(socket_errors.values()),
        "error_kinds": socket_errors,
        "status_codes": statuses,
        "achieved_rps": round(summary.get("requestsPerSec") or 0.0, 1),
        "seconds": summary.get("total"),
        "p50_ms": ms("p50"),
        "p90_ms": ms("p90"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "max_ms": round(summary["slowest"] * 1000, 3) if summary.get("slowest") is not None else None,
    }
