"""wrk as the load generator: one POST body per run, figures back as JSON (requests, latency percentiles, errors).

wrk runs its own event loop in C, so the load generator takes little of the two cores the servers share with it.
Every run is bounded by ``-d`` (time) and, when ``max_requests`` is given, by a request count per connection.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

WRK = "wrk"

# wrk calls done() once with the merged figures of every thread; latencies are in microseconds.
_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()
%(counter)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write("WRK_JSON ")
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, '
    .. '"mean_us": %%f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

# Stops each connection after its share of max_requests; wrk then ends the thread (or -d ends the run).
_COUNTER = """
local limit = %(per_thread)d
local seen = 0
response = function(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
"""


@dataclass
class WrkResult:
    """One wrk run."""

    requests: int
    seconds: float
    errors: int  # socket errors plus non-2xx/3xx answers
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly figures, with req/s."""
        return asdict(self) | {"rps": round(self.rps, 1)}


def have_wrk() -> bool:
    """Tell whether wrk is on PATH."""
    return shutil.which(WRK) is not None


def run_wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    threads: int | None = None,
    timeout_s: float = 5.0,
    max_requests: int | None = None,
) -> WrkResult:
    """POST body to url with `connections` keep-alive connections for `seconds` (and at most max_requests)."""
    threads = threads or min(connections, 2)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        counter = ""
        if max_requests is not None:
            counter = _COUNTER % {"per_thread": max(1, max_requests // threads)}
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA % {"body": body_path, "counter": counter})
        argv = [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{math.ceil(seconds)}s",
                "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(script), url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures (exit {out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=socket_errors + raw["status"],
        non_2xx=raw["status"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3),
    )
