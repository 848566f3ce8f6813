#!/usr/bin/env bash
# Load tools the benchmarks build from package registries, on first use, into .tools/ (never committed).
#   bench/tools.sh oha     build oha (open-loop HTTP load generator, crates.io, pinned) unless already there
# Prints the tool's path. Needs cargo and rustc (a build takes several minutes on two cores; see bench/README.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
OHA_VERSION="1.16.0"

log() { printf '[bench tools] %s\n' "$*" >&2; }

oha() {
    local bin="$TOOLS/bin/oha"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $OHA_VERSION\$"; then
        echo "$bin"
        return
    fi
    command -v cargo >/dev/null || { log "cargo not found: install Rust (cargo, rustc) to build oha"; exit 1; }
    log "building oha $OHA_VERSION with cargo (--locked) into $TOOLS"
    local began=$SECONDS
    cargo install oha --locked --version "$OHA_VERSION" --root "$TOOLS" --quiet
    log "oha built in $((SECONDS - began)) s"
    echo "$bin"
}

case "${1:-}" in
    oha) oha ;;
    *) echo "usage: $0 oha" >&2; exit 2 ;;
esac
