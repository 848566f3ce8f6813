"""What every benchmark shares: the results file, machine facts, load average, /proc CPU and memory readings."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from devstack.procs import descendants

log = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# BENCH_RESULTS sends figures elsewhere (trial runs that must not end up in the report).
RESULTS_FILE = Path(os.environ.get("BENCH_RESULTS", RESULTS_DIR / "results.jsonl"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def _host_cpu_ticks() -> list[int]:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal ... (ticks since boot, all cores).
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


class HostCpu:
    """Shares of the whole machine's CPU time between :meth:`start` and :meth:`stop`: idle (with iowait) and
    steal (time the hypervisor gave this machine's virtual CPUs to someone else)."""

    def start(self) -> HostCpu:
        self._before = _host_cpu_ticks()
        return self

    def stop(self) -> dict[str, float | None]:
        delta = [after - before for before, after in zip(self._before, _host_cpu_ticks(), strict=True)]
        total = sum(delta)
        if not total:
            return {"host_idle_share": None, "host_steal_share": None}
        return {"host_idle_share": round((delta[3] + delta[4]) / total, 3),
                "host_steal_share": round(delta[7] / total, 3)}


def wait_for_quiet(max_load: float, timeout: float, interval: float = 30.0) -> tuple[float, bool]:
    """Wait (bounded) until the 1-minute load average is below max_load; returns (load, whether it got there)."""
    deadline = time.monotonic() + timeout
    while True:
        one = loadavg()[0]
        if one < max_load:
            return one, True
        if time.monotonic() >= deadline:
            log.warning("load average still %.2f after %.0f s: measuring anyway (recorded)", one, timeout)
            return one, False
        log.info("load average %.2f >= %.2f: waiting %.0f s", one, max_load, interval)
        time.sleep(min(interval, max(deadline - time.monotonic(), 1.0)))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _command_version(argv: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def machine() -> dict[str, Any]:
    """CPU, memory, OS and the versions of everything measured."""
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    packages = ("flask", "gunicorn", "werkzeug", "mlflow", "scikit-learn", "numpy", "pandas", "pymongo",
                "uvicorn", "fastapi", "prometheus-client")
    from devstack.servers import find_tool

    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in packages},
        "nginx": _command_version(["nginx", "-v"]),
        "wrk": _command_version(["wrk", "--version"]),
        "ferretdb": _command_version([find_tool("ferretdb", "FERRETDB_BIN"), "--version"]),
        "git_commit": _command_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_command_version(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])),
    }


# Every figure of one `python -m bench` invocation carries its id, so the report can pick the latest of each kind.
SESSION_ID = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def append_result(record: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """Append one figure (with a timestamp and the session id) to the results file and return it."""
    path = path or RESULTS_FILE
    record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "session": SESSION_ID, **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record, sort_keys=False) + "\n")
    return record


def read_results(path: Path | None = None) -> list[dict[str, Any]]:
    """Every record of the results file, oldest first."""
    path = path or RESULTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def median(values: Iterable[float]) -> float:
    """The median (NaN for no values)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------ /proc readings


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of one process (its threads included), in seconds; 0 when it is gone.

    With reaped_children, plus cutime + cstime: the CPU of its children that ended and were waited for.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" field 3 (state) is index 0: utime is field 14, stime 15, cutime 16, cstime 17 of stat(5).
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of every process in the trees rooted at pids, children that already ended included.

    A live process counts its own CPU; one that ended counts in its parent's cutime/cstime once reaped
    (PostgreSQL's autovacuum workers and short-lived backends, a Gunicorn worker replaced during a run).
    """
    seen: set[int] = set()
    total = 0.0
    for root in pids:
        for pid in descendants(root):
            if pid not in seen:
                seen.add(pid)
                total += cpu_seconds(pid, reaped_children=True)
    return total


def _proc_kib_as_mib(path: str, field: str) -> float:
    """A "Field:   N kB" line of a /proc file, in MiB (NaN when the process or the field is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS)."""
    return _proc_kib_as_mib(f"/proc/{pid}/status", "VmRSS:")


def pss_mib(pid: int) -> float:
    """Proportional set size in MiB (shared pages divided among sharers): fair per-worker memory."""
    return _proc_kib_as_mib(f"/proc/{pid}/smaps_rollup", "Pss:")


@dataclass
class CpuMeter:
    """CPU seconds spent by process trees between start() and stop()."""

    roots: dict[str, list[int]]
    _before: dict[str, float] | None = None

    def start(self) -> CpuMeter:
        """Take the first reading."""
        self._before = {name: tree_cpu_seconds(pids) for name, pids in self.roots.items()}
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds per tree since start()."""
        assert self._before is not None, "start() first"
        return {name: round(tree_cpu_seconds(pids) - self._before[name], 3) for name, pids in self.roots.items()}
