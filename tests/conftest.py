"""Fixtures shared by several test folders: Helm (the chart tests in tests/k8s, the cluster test in tests/containers),
built by scripts/k8s/tools.sh (once per session; a warm run is instant)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS_SH = REPO / "scripts" / "k8s" / "tools.sh"
# A first build of Helm through the Go module proxy (cold caches) takes minutes; the chart tests raise their own
# per-test limit to fit it (test_helm_chart.py's pytestmark), since the first test's setup runs it.
BUILD_TIMEOUT_SECONDS = 420


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Path of the pinned helm binary (built into .tools/bin when missing or of another version)."""
    began = time.monotonic()
    done = subprocess.run(
        [str(TOOLS_SH)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    assert done.returncode == 0, f"scripts/k8s/tools.sh failed:\n{done.stderr}"
    print(f"scripts/k8s/tools.sh: {time.monotonic() - began:.1f} s")
    return Path(done.stdout.strip().splitlines()[-1])
