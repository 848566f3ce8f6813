#!/usr/bin/env bash
# The Kubernetes tools the chart tests need, built from the Go module proxy into .tools/bin: Helm.
#
#   scripts/k8s/tools.sh          build what is missing or of another version (idempotent), print each tool's path
#
# Not part of scripts/install.sh: only the Kubernetes tests need Helm, and they call this script themselves (as the
# container tests call scripts/containers/engine.sh), so a plain install stays fast. A first build of Helm takes
# a couple of minutes on 2 cores; a warm run under a second.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# setup_go (and the apt helpers it falls back on when no Go is installed).
# shellcheck source=../lib/apt.sh
. "$REPO/scripts/lib/apt.sh"
# shellcheck source=../lib/go.sh
. "$REPO/scripts/lib/go.sh"
log() { printf '[k8s-tools] %s\n' "$*" >&2; }
WORK=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

BIN="$REPO/.tools/bin"
HELM_VERSION="v3.22.0"
# What `helm template`/`lint` assume without a cluster: Helm's Makefile derives it from its client-go (v0.37 ->
# Kubernetes 1.37); a bare `go install` leaves the fallback 1.20, older than the chart's kubeVersion.
HELM_KUBE_MINOR="37"
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
    HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done
# Beside the binary: the flags it was built with, so a change of them rebuilds it.
HELM_STAMP="$BIN/.helm-ldflags"

helm_ok() {
    [ -x "$BIN/helm" ] || return 1
    local out
    # Read the whole output first (see install.sh: grep -q on a pipe under pipefail fails at random).
    out="$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
    [ "$out" = "$HELM_VERSION" ] && [ -f "$HELM_STAMP" ] && [ "$(cat "$HELM_STAMP")" = "$HELM_LDFLAGS" ]
}

install_helm() {
    if helm_ok; then
        return
    fi
    setup_go
    local began=$SECONDS
    log "building helm $HELM_VERSION (go install through the module proxy)"
    # Outside any module, into a scratch GOBIN, so a failed build leaves no half-written .tools/bin/helm.
    WORK="$(mktemp -d)"
    # The versions are linked in by hand: `go install` does not run Helm's Makefile, which sets them.
    (cd "$WORK" && GOBIN="$WORK/bin" go install -trimpath -ldflags "$HELM_LDFLAGS" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
    mkdir -p "$BIN"
    mv -f "$WORK/bin/helm" "$BIN/helm"
    printf '%s' "$HELM_LDFLAGS" >"$HELM_STAMP"
    helm_ok || { log "built helm does not report $HELM_VERSION"; exit 1; }
    log "helm $HELM_VERSION built in $((SECONDS - began)) s"
}

main() {
    install_helm
    echo "$BIN/helm"
}

main "$@"
