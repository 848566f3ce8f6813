#!/usr/bin/env bash
# One command for every benchmark: makes sure wrk (Debian) and py-spy (PyPI, pinned) are there, then runs
# `python -m bench` with the arguments given (default: everything, then the report in bench/README.md).
#   bench/run.sh                          all benchmarks, 20 s x 3 runs, then the report
#   bench/run.sh serving --seconds 5 --runs 1
#   bench/run.sh report                   only re-render bench/README.md and the plot from the results file
# The open-loop benchmark builds oha (crates.io, pinned) with bench/tools.sh on its first run (minutes); the storage
# benchmark installs Debian's PostgreSQL with it (bench/tools.sh postgresql, seconds) on its first run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

log() { printf '[bench] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

[ -x .venv/bin/python ] || scripts/install.sh

if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (Debian package)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
fi
if [ ! -x .venv/bin/py-spy ]; then
    log "installing py-spy into .venv (bench/requirements.txt)"
    .venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
fi

export PYTHONPATH="$REPO:$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m bench "$@"
