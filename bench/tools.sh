#!/usr/bin/env bash
# Load tools the benchmarks need from package registries, on first use (never committed).
#   bench/tools.sh oha         build oha (open-loop HTTP load generator, crates.io, pinned) into .tools/ unless there
#                              (needs cargo and rustc; a build takes several minutes on two cores, see bench/README.md)
#   bench/tools.sh postgresql  install Debian's PostgreSQL server (the storage benchmark's FerretDB backend, and its
#                              harness test) unless its binaries are there; root or sudo. The package's own
#                              cluster (15/main) is created but not started, its service stays disabled
# Prints the tool's path (for postgresql: the directory of its server binaries).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
OHA_VERSION="1.16.0"
# Debian 12's PostgreSQL; scripts/devstack/servers.py (POSTGRESQL_MAJOR) runs its binaries from this directory.
POSTGRESQL_MAJOR="15"

log() { printf '[bench tools] %s\n' "$*" >&2; }

# as_root, apt_install (policy-rc.d: the package's own cluster service is not started, and stays disabled).
# shellcheck source=../scripts/lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

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

postgresql() {
    local bin="/usr/lib/postgresql/$POSTGRESQL_MAJOR/bin" name missing=0
    for name in initdb postgres pg_isready psql; do
        [ -x "$bin/$name" ] || missing=1
    done
    if [ "$missing" -eq 1 ]; then
        log "installing Debian's postgresql-$POSTGRESQL_MAJOR (25 MB to download, 65 MB where LLVM and ICU are missing)"
        local began=$SECONDS
        # apt's progress to stderr: stdout carries only the path.
        as_root apt-get update -q >&2
        apt_install "postgresql-$POSTGRESQL_MAJOR" >&2
        log "postgresql-$POSTGRESQL_MAJOR installed in $((SECONDS - began)) s"
    fi
    echo "$bin"
}

case "${1:-}" in
    oha) oha ;;
    postgresql) postgresql ;;
    *) echo "usage: $0 oha|postgresql" >&2; exit 2 ;;
esac
