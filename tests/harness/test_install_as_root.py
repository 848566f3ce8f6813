"""scripts/lib/apt.sh's as_root, which install.sh (and base-images.sh) run every root step through.

Run as the unprivileged user `nobody` (runuser, so the test itself needs root): with a `sudo` on PATH the step
goes through it with its arguments unchanged; without one the script stops with a message naming the command
and saying what to do. Root runs the command itself. The `sudo` here is a stand-in that records its arguments:
this is a unit test of the shell function, not of sudo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

APT_SH = Path(__file__).resolve().parents[2] / "scripts" / "lib" / "apt.sh"
LOG = 'log() { printf "[install] %s\\n" "$*" >&2; }'
SCRIPT = f'{LOG}; . {APT_SH}; as_root apt-get install -y "two words"; echo after'

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"),
                                reason="runs a shell as `nobody` with runuser, which needs root")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory `nobody` can enter (pytest's tmp_path sits below a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="mlstack-as-root-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _bin_dir(base: Path, *, with_sudo: bool) -> Path:
    """A PATH of exactly what as_root may use: id, and a recording `sudo` when asked for."""
    bin_dir = base / ("with-sudo" if with_sudo else "without-sudo")
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id"))
    if with_sudo:
        sudo = bin_dir / "sudo"
        sudo.write_text('#!/bin/bash\nprintf "sudo-called:"; printf " [%s]" "$@"; echo\n')
        sudo.chmod(0o755)
    bin_dir.chmod(0o755)
    return bin_dir


def _as_nobody(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", shutil.which("env"), "-i", f"PATH={bin_dir}", shutil.which("bash"),
         "-c", SCRIPT],
        capture_output=True, text=True, timeout=30,
    )


def test_a_user_with_sudo_runs_the_step_through_sudo(open_dir: Path) -> None:
    result = _as_nobody(_bin_dir(open_dir, with_sudo=True))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["sudo-called: [apt-get] [install] [-y] [two words]", "after"]


def test_a_user_without_sudo_is_told_what_to_do_and_stops(open_dir: Path) -> None:
    result = _as_nobody(_bin_dir(open_dir, with_sudo=False))
    assert result.returncode == 1
    assert "after" not in result.stdout
    assert "[install] needs root for: apt-get install -y two words" in result.stderr
    assert "run it as root, or install sudo and give this user sudo rights" in result.stderr


def test_root_runs_the_step_itself() -> None:
    script = f'log() {{ :; }}; . {APT_SH}; as_root printf "%s|" "two words" x; echo'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "two words|x|"
