#!/usr/bin/env bash
# The Kubernetes tools the tests need, built from the Go module proxy into .tools/bin.
#
#   scripts/k8s/tools.sh          Helm (the chart tests): build it when missing or of another version, print its path
#   scripts/k8s/tools.sh cluster  Helm, the Kubernetes components (one multi-call `kube` binary from k8s.io/kubernetes,
#                                 linked as kube-apiserver, kubelet, kubectl...), CoreDNS and a Prometheus with
#                                 Kubernetes discovery (prometheus-k8s), for scripts/k8s/cluster.sh and its test;
#                                 prints the bin directory
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
WORK=""   # the scratch dir of the build in progress (new_work), removed at exit
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT
new_work() {
    [ -z "$WORK" ] || rm -rf "$WORK"
    WORK="$(mktemp -d)"
}

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
    helm_ok && return
    build_lock helm
    if helm_ok; then
        build_unlock
        return
    fi
    setup_go
    local began=$SECONDS
    log "building helm $HELM_VERSION (go install through the module proxy)"
    # Outside any module, into a scratch GOBIN, so a failed build leaves no half-written .tools/bin/helm.
    new_work
    # The versions are linked in by hand: `go install` does not run Helm's Makefile, which sets them.
    (cd "$WORK" && GOBIN="$WORK/bin" go install -trimpath -ldflags "$HELM_LDFLAGS" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
    mkdir -p "$BIN"
    mv -f "$WORK/bin/helm" "$BIN/helm"
    printf '%s' "$HELM_LDFLAGS" >"$HELM_STAMP"
    helm_ok || { log "built helm does not report $HELM_VERSION"; exit 1; }
    log "helm $HELM_VERSION built in $((SECONDS - began)) s"
    build_unlock
}

# The cluster's components: Kubernetes 1.34 is the newest that still runs on cgroup v1 without opting in (these
# machines have no cgroup v2), and Debian's etcd 3.4 serves it.
KUBE_VERSION="v1.34.4"
KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
COREDNS_VERSION="v1.12.4"
KUBE_SRC="$REPO/scripts/k8s/kube"

kube_stamp() {  # what the kube binary is built from: the version and our main.go
    printf '%s %s' "$KUBE_VERSION" "$(sha256sum <"$KUBE_SRC/main.go" | cut -c1-16)"
}

kube_ok() {
    [ -x "$BIN/kube" ] && [ -f "$BIN/.kube-build" ] && [ "$(cat "$BIN/.kube-build")" = "$(kube_stamp)" ]
}

install_kube() {
    if kube_ok; then
        link_kube
        return
    fi
    build_lock kube
    if kube_ok; then
        build_unlock
        link_kube
        return
    fi
    setup_go
    local began=$SECONDS minor staging_version mod ldflags
    log "building the Kubernetes components $KUBE_VERSION (k8s.io/kubernetes through the module proxy; minutes)"
    new_work
    cp "$KUBE_SRC/main.go" "$WORK/"
    go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
    mod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging folders that a
    # module download does not have: point each at its published release (v0.34.4 for v1.34.4) instead.
    minor="${KUBE_VERSION#v1.}"
    staging_version="v0.$minor"
    {
        printf 'module mlstack.local/kube\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
        awk -v v="$staging_version" '/=> \.\/staging/ {print "\t" $1 " => " $1 " " v}' "$mod"
        printf ')\n'
    } >"$WORK/go.mod"
    (cd "$WORK" && go mod tidy)
    # Without these the components report v0.0.0 (the kubelet then registers a node of that version).
    minor="${minor%%.*}"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    done
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    (cd "$WORK" && go build -trimpath -ldflags "$ldflags" -o "$WORK/kube" .)
    mkdir -p "$BIN"
    mv -f "$WORK/kube" "$BIN/kube"
    kube_stamp >"$BIN/.kube-build"
    link_kube
    "$BIN/kubectl" version --client 2>/dev/null | grep -q "$KUBE_VERSION" \
        || { log "built kube does not report $KUBE_VERSION"; exit 1; }
    log "Kubernetes components $KUBE_VERSION built in $((SECONDS - began)) s"
    build_unlock
}

link_kube() {
    local name
    for name in "${KUBE_COMPONENTS[@]}"; do
        ln -sfn kube "$BIN/$name"
    done
}

coredns_ok() {
    local out
    [ -x "$BIN/coredns" ] || return 1
    out="$("$BIN/coredns" -version 2>/dev/null || true)"
    [[ "$out" == *"CoreDNS-${COREDNS_VERSION#v}"* ]]
}

install_coredns() {
    coredns_ok && return
    build_lock coredns
    if coredns_ok; then
        build_unlock
        return
    fi
    setup_go
    local began=$SECONDS
    log "building CoreDNS $COREDNS_VERSION (go install through the module proxy)"
    new_work
    (cd "$WORK" && GOBIN="$WORK/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION")
    mkdir -p "$BIN"
    mv -f "$WORK/bin/coredns" "$BIN/coredns"
    log "CoreDNS $COREDNS_VERSION built in $((SECONDS - began)) s"
    build_unlock
}

# Prometheus with its Kubernetes service discovery, for the cluster test's check of the chart's scrape jobs
# (monitoring/prometheus/kubernetes.yml): Debian's prometheus is built without it. Only that discovery is linked
# in (Prometheus' own build tags), the version of the compose stack's prom/prometheus:v3.4.0.
PROMETHEUS_MODULE="github.com/prometheus/prometheus@v0.304.2"
PROMETHEUS_VERSION="3.4.2"

prometheus_ok() {
    local out
    [ -x "$BIN/prometheus-k8s" ] || return 1
    out="$("$BIN/prometheus-k8s" --version 2>/dev/null || true)"
    [[ "$out" == *"version $PROMETHEUS_VERSION"* ]]
}

install_prometheus() {
    prometheus_ok && return
    build_lock prometheus-k8s
    if prometheus_ok; then
        build_unlock
        return
    fi
    setup_go
    local began=$SECONDS
    log "building Prometheus $PROMETHEUS_VERSION with Kubernetes discovery (module source through the proxy)"
    new_work
    # Its go.mod has a replace directive, which `go install module@version` refuses: build it as the main module.
    go_module_source "$PROMETHEUS_MODULE" "$WORK"
    (cd "$WORK" && go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
        -o "$WORK/prometheus-k8s" ./cmd/prometheus)
    mkdir -p "$BIN"
    mv -f "$WORK/prometheus-k8s" "$BIN/prometheus-k8s"
    log "Prometheus $PROMETHEUS_VERSION (Kubernetes discovery) built in $((SECONDS - began)) s"
    build_unlock
}

main() {
    case "${1:-helm}" in
        helm)
            install_helm
            echo "$BIN/helm"
            ;;
        cluster)
            install_helm
            install_kube
            install_coredns
            install_prometheus
            echo "$BIN"
            ;;
        *)
            log "usage: scripts/k8s/tools.sh [helm|cluster]"
            exit 2
            ;;
    esac
}

main "$@"
