"""Shared pieces of the container tests: the timings printed in the terminal summary (marker: pyproject.toml)."""

from __future__ import annotations

import pytest

TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def container_timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Wall-clock seconds per phase (engine start, builds, stack up...), shown at the end of the run."""
    return request.config.stash.setdefault(TIMINGS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the measured phases, so every CI log shows how long the container checks took."""
    timings = config.stash.get(TIMINGS, {})
    if timings:
        terminalreporter.write_sep("-", "container stack timings")
        for name, seconds in timings.items():
            terminalreporter.write_line(f"{name:<48}{seconds:8.1f} s")
