#!/usr/bin/env bash
# The full check CI runs: install (idempotent), lint, the pytest suite (real servers through the devstack
# plugin; the Postman collection runs with newman in tests/e2e/test_postman_newman.py).
# Extra arguments go to pytest, e.g. scripts/test.sh -k harness -x
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }

step "install"
scripts/install.sh

step "ruff"
.venv/bin/ruff check .

# The slow tool builds (Jaeger, then Helm, the Kubernetes components, CoreDNS and a Prometheus with Kubernetes
# discovery: about 25 min of CPU cold, nothing warm) start now at low priority and run while the tests do; a test
# that needs a tool runs its build script, which waits for the build in progress (one lock per tool) rather than
# starting a second one. Only for the whole suite: a run of a few tests builds just what it uses.
BG_PID=""
BG_LOG="$REPO/.tools/background-builds.log"
if [ "$#" -eq 0 ]; then
    step "background builds (log: ${BG_LOG#"$REPO"/})"
    mkdir -p "$REPO/.tools"
    setsid nice -n 15 bash -c 'scripts/tracing/jaeger.sh && scripts/k8s/tools.sh cluster' >"$BG_LOG" 2>&1 </dev/null &
    BG_PID=$!
fi
# A build still going when this script ends (pytest stopped early) is stopped with it: its process group, by pid.
trap '[ -z "$BG_PID" ] || kill -- "-$BG_PID" 2>/dev/null || true' EXIT

step "pytest"
export PYTHONPATH="$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}"
rc=0
# A fixed base dir keeps every real server's log after the run (pytest clears it at the next run).
BASETEMP="$REPO/.pytest-tmp"
.venv/bin/python -m pytest --basetemp="$BASETEMP" "$@" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    # Show where servers logged a traceback, so a CI failure can be read from its output alone.
    grep -rl --include='*.log' -e 'Traceback' "$BASETEMP" 2>/dev/null | head -n 8 | while read -r log; do
        printf '\n--- last lines of %s\n' "${log#"$REPO"/}"
        tail -n 40 "$log"
    done || true   # grep may die of SIGPIPE once head has its 8 names; keep pytest's exit code
fi
if [ -n "$BG_PID" ]; then
    grep -E 'built in|ERROR|error' "$BG_LOG" | grep -v '^go: ' || true
fi
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing, a green run must have run something" >&2
    exit 1
elif [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

step "all checks passed"
