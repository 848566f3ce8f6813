#!/usr/bin/env bash
# Jaeger v2 (an OTLP receiver with a query API) built from the Go module proxy into .tools/bin/jaeger.
#
#   scripts/tracing/jaeger.sh     build it when missing or of another version (idempotent), print its path
#
# Not part of scripts/install.sh: a first build takes minutes (Jaeger brings the OpenTelemetry Collector and every
# storage backend's client; timings in README's Traces section), and only the trace test, the tracing benchmark
# and `make dev DEVSTACK_ARGS=--tracing` need it: they call this script themselves (scripts/devstack/jaeger.py),
# as the Kubernetes tests call scripts/k8s/tools.sh. A warm run takes well under a second.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# setup_go (and the apt helpers it falls back on when no Go is installed).
# shellcheck source=../lib/apt.sh
. "$REPO/scripts/lib/apt.sh"
# shellcheck source=../lib/go.sh
. "$REPO/scripts/lib/go.sh"
log() { printf '[jaeger] %s\n' "$*" >&2; }
WORK=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

BIN="$REPO/.tools/bin"
# Jaeger's v1.x tags carry the v2 binary (cmd/jaeger); v1.75.0 is the release of v2.12.0.
JAEGER_VERSION="v1.75.0"

jaeger_ok() {
    [ -x "$BIN/jaeger" ] || return 1
    local out
    # Read the whole output first (see install.sh: grep -q on a pipe under pipefail fails at random).
    out="$("$BIN/jaeger" version 2>/dev/null)" || return 1
    grep -q "\"gitVersion\": *\"$JAEGER_VERSION\"" <<<"$out"
}

install_jaeger() {
    jaeger_ok && return
    build_lock jaeger
    if jaeger_ok; then
        build_unlock
        return
    fi
    setup_go
    local began=$SECONDS
    log "building jaeger $JAEGER_VERSION (module source from the Go module proxy)"
    # `go install ...@version` refuses the module: its go.mod has a replace directive. So build its source as
    # the main module (like FerretDB in install.sh), with the version linked in.
    WORK="$(mktemp -d)"
    go_module_source "github.com/jaegertracing/jaeger@$JAEGER_VERSION" "$WORK"
    mkdir -p "$BIN"
    (cd "$WORK" && go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION" \
        -o "$BIN/jaeger.new" ./cmd/jaeger)
    mv -f "$BIN/jaeger.new" "$BIN/jaeger"
    jaeger_ok || { log "built jaeger does not report $JAEGER_VERSION"; exit 1; }
    log "jaeger $JAEGER_VERSION built in $((SECONDS - began)) s"
    build_unlock
}

main() {
    install_jaeger
    echo "$BIN/jaeger"
}

main "$@"
