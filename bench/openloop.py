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
from collections.abc import Iterable
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


def _upstream_seconds(value: str) -> float | None:
    """Nginx's $upstream_response_time: "-" without an upstream, "a, b" when it tried two (their sum)."""
    parts = [part.strip() for part in str(value).replace(":", ",").split(",")]
    numbers = [float(part) for part in parts if part and part != "-"]
    return sum(numbers) if numbers else None


def access_log_timings(lines: Iterable[str]) -> dict[str, Any]:
    """Percentiles (ms) of what Nginx saw of the requests in these lines of its JSON access log: ``nginx``,
    $request_time (from reading the request's first bytes to sending the last byte of the answer) and
    ``upstream``, $upstream_response_time (the app: connect, wait for a worker, answer). Set beside oha's own
    figures they say where a request's time went: in the app, in Nginx, or before Nginx read it (the load
    generator and the kernel). Nginx logs these in whole milliseconds."""
    import numpy as np

    nginx, upstream = [], []
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        nginx.append(float(entry["request_time"]) * 1000)
        seconds = _upstream_seconds(entry.get("upstream_time", "-"))
        if seconds is not None:
            upstream.append(seconds * 1000)
    figures: dict[str, Any] = {"nginx_requests": len(nginx)}
    for name, values in (("nginx", nginx), ("upstream", upstream)):
        for label, q in (("p50", 50), ("p99", 99), ("p999", 99.9)):
            figures[f"{name}_{label}_ms"] = round(float(np.percentile(values, q)), 3) if values else None
        figures[f"{name}_max_ms"] = round(max(values), 3) if values else None
    return figures


class AccessLogWindow:
    """The lines an Nginx access log gains between :meth:`start` and :meth:`timings`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offset = 0

    def start(self) -> AccessLogWindow:
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def timings(self) -> dict[str, Any]:
        with self.path.open(encoding="utf-8") as log:
            log.seek(self.offset)
            return access_log_timings(log)
