#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine for the cluster tests (tests/k8s/test_cluster.py) and for trying
# the chart: etcd and containerd from Debian, the Kubernetes components and CoreDNS built by scripts/k8s/tools.sh.
#
#   scripts/k8s/cluster.sh up             install what is missing, start what is not running (idempotent), wait
#                                         until the node and cluster DNS are ready, print the exports (KUBECONFIG...)
#   scripts/k8s/cluster.sh env            print the exports only:  eval "$(scripts/k8s/cluster.sh env)"
#   scripts/k8s/cluster.sh status         exit 0 when the API server answers and the node is Ready
#   scripts/k8s/cluster.sh load IMAGE...  copy images from the project's Docker engine into the node's containerd
#   scripts/k8s/cluster.sh down           stop every daemon this script started (by its recorded PID) and remove
#                                         the network state it made (bridge, its iptables chains, pod netns, mounts)
#
# No systemd here: each daemon runs in the background, its PID in $RUN/<name>.pid, its log in $ROOT/logs. Nothing
# routes off the machine: the node's address is on a bridge this script creates, the API server listens on
# loopback and that bridge only. Pods get 10.244.0.0/24 on the bridge, Services 10.96.0.0/16, DNS 10.96.0.10.
# Network policies are accepted by the API but not enforced: the bridge CNI plugin has no policy engine.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/scripts/k8s"
ROOT="${MLSTACK_K8S_ROOT:-/var/lib/mlstack-k8s}"
# Short: containerd's and the kubelet's sockets live here and unix socket paths are limited to 108 bytes.
RUN="${MLSTACK_K8S_RUN:-/run/mlstack-k8s}"
PKI="$ROOT/pki"
LOGS="$ROOT/logs"
NODE="mlstack-node"
BRIDGE="mlk8s0"
NODE_IP="10.244.0.1"
POD_CIDR="10.244.0.0/24"
SERVICE_CIDR="10.96.0.0/16"
API_SERVICE_IP="10.96.0.1"
DNS_SERVICE_IP="10.96.0.10"
API_PORT=6443
SANDBOX_IMAGE="mlstack.local/pause:1"
COREDNS_IMAGE="mlstack.local/coredns:1"
START_TIMEOUT="${MLSTACK_K8S_START_TIMEOUT:-120}"
CTR_SOCK="$RUN/containerd.sock"
KUBECONFIG_ADMIN="$PKI/admin.kubeconfig"
DEBIAN_PACKAGES=(containerd runc containernetworking-plugins etcd-server conntrack iptables iproute2 openssl libc6-dev gcc)

log() { printf '[k8s-cluster] %s\n' "$*" >&2; }
die() { printf '[k8s-cluster] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=../lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

print_env() {
    printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_ADMIN"
    printf 'export PATH=%q:"$PATH"\n' "$BIN"
}

pid_alive() {  # pid_alive NAME: the daemon this script started under NAME is running
    local file="$RUN/$1.pid" pid
    [ -f "$file" ] || return 1
    pid="$(cat "$file")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start_daemon() {  # start_daemon NAME COMMAND...: in its own session, PID recorded, log in $LOGS
    local name="$1"
    shift
    if pid_alive "$name"; then
        return
    fi
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo "$!" >"$RUN/$name.pid"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM by the recorded PID, SIGKILL after 15 s
    local file="$RUN/$1.pid" pid i
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds or the deadline passes
    local what="$1" seconds="$2" deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${seconds}s (logs in $LOGS)"
        sleep 1
    done
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

install_packages() {
    local missing=() pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        as_root apt-get update -q >/dev/null
        apt_install "${missing[@]}"
    fi
}

make_pki() {
    [ -f "$PKI/sa.pub" ] && return
    log "making the cluster's certificates (openssl)"
    local tmp="$PKI.new"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -subj "/CN=mlstack-k8s-ca" -days 3650 \
            -out ca.crt 2>/dev/null
        cert() {  # cert NAME SUBJECT [SERVER_SANS]
            local ext="extendedKeyUsage=clientAuth"
            [ -z "${3:-}" ] || ext="subjectAltName=$3"$'\n'"extendedKeyUsage=serverAuth,clientAuth"
            printf '%s\n' "$ext" >"$1.ext"
            openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile "$1.ext" -out "$1.crt" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        cert apiserver "/CN=kube-apiserver" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$NODE_IP"
        cert admin "/O=system:masters/CN=mlstack-admin"
        cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
        cert controller-manager "/CN=system:kube-controller-manager"
        cert scheduler "/CN=system:kube-scheduler"
        cert kube-proxy "/CN=system:kube-proxy"
        cert kubelet "/O=system:nodes/CN=system:node:$NODE"
        cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE" "DNS:$NODE,IP:127.0.0.1,IP:$NODE_IP"
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        for user in admin controller-manager scheduler kube-proxy kubelet; do
            cat >"$user.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mlstack
  cluster: {certificate-authority: $PKI/ca.crt, server: "https://$NODE_IP:$API_PORT"}
users:
- name: $user
  user: {client-certificate: $PKI/$user.crt, client-key: $PKI/$user.key}
contexts:
- name: mlstack
  context: {cluster: mlstack, user: $user}
current-context: mlstack
EOF
        done
        chmod 600 ./*.key
    )
    rm -rf "$PKI"
    mv "$tmp" "$PKI"
}

make_bridge() {
    # The node's address lives on a bridge of our own (the pods' gateway): no host interface is used.
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Pod -> Service -> pod on the same bridge only works when bridged traffic passes iptables (kube-proxy's DNAT).
    if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
        echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
    else
        modprobe br_netfilter 2>/dev/null || die "bridged traffic cannot pass iptables (no br_netfilter)"
    fi
    echo 1 >/proc/sys/net/ipv4/ip_forward
}

install_file() {  # install_file PATH: stdin becomes PATH only when it differs (kube-proxy exits when its file changes)
    local tmp="$1.new"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1"
    fi
}

write_configs() {
    mkdir -p "$ROOT/conf" "$ROOT/cni/net.d"
    install_file "$ROOT/conf/containerd.toml" <<EOF
version = 2
root = "$ROOT/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails setting its oom_score_adj (runc: "can't get
  # final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ROOT/cni/net.d"
EOF
    install_file "$ROOT/cni/net.d/10-mlstack.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "mlstack-pods", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "dataDir": "$ROOT/cni/ipam",
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
    install_file "$ROOT/conf/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: Webhook}
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
failSwapOn: false
podLogsDir: $ROOT/pod-logs
maxPods: 60
# A shared disk: never evict for disk pressure, never collect our imported images (no registry to pull them back).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOF
    install_file "$ROOT/conf/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
EOF
}

# Two images the node needs that no registry can give it here: the pod sandbox (a static `pause`) and CoreDNS, built
# FROM scratch on the project's Docker engine from binaries made on this machine, then loaded like the app images.
build_system_images() {
    local docker_env ctx
    docker_env="$("$REPO/scripts/containers/engine.sh" start)"
    eval "$docker_env"
    if ! docker image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then
        ctx="$(mktemp -d)"
        gcc -Os -static -o "$ctx/pause" "$HERE/images/pause.c"
        printf 'FROM scratch\nCOPY pause /pause\nUSER 65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
        docker build -q -t "$SANDBOX_IMAGE" "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
    if ! docker image inspect "$COREDNS_IMAGE" >/dev/null 2>&1 \
        || [ "$(docker image inspect -f '{{index .Config.Labels "org.mlstack.coredns"}}' "$COREDNS_IMAGE")" \
            != "$(sha256sum <"$BIN/coredns" | cut -c1-16)" ]; then
        ctx="$(mktemp -d)"
        cp "$BIN/coredns" "$ctx/coredns"
        printf 'FROM scratch\nCOPY coredns /coredns\nLABEL org.mlstack.coredns=%s\nUSER 65532\nENTRYPOINT ["/coredns"]\n' \
            "$(sha256sum <"$BIN/coredns" | cut -c1-16)" >"$ctx/Dockerfile"
        docker build -q -t "$COREDNS_IMAGE" "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
}

load_images() {  # load_images IMAGE...: docker save | ctr import of those not yet loaded with the same id
    local docker_env image id stamp todo=() stamps=() ids=() i
    docker_env="$("$REPO/scripts/containers/engine.sh" env)"
    eval "$docker_env"
    mkdir -p "$ROOT/loaded"
    for image in "$@"; do
        id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null)" || die "no image $image on the project's engine"
        stamp="$ROOT/loaded/$(printf '%s' "$image" | tr '/:' '__')"
        if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$id" ]; then
            todo+=("$image")
            stamps+=("$stamp")
            ids+=("$id")
        fi
    done
    [ "${#todo[@]}" -gt 0 ] || return 0
    local began=$SECONDS
    # One archive for all: the layers the images share (the apps' Python base) are written once.
    docker save "${todo[@]}" | ctr -a "$CTR_SOCK" -n k8s.io images import - >/dev/null
    for i in "${!todo[@]}"; do
        printf '%s' "${ids[$i]}" >"${stamps[$i]}"
    done
    log "loaded ${todo[*]} into the node's containerd in $((SECONDS - began)) s"
}

start_cluster() {
    mkdir -p "$ROOT" "$RUN" "$LOGS" "$ROOT/etcd" "$ROOT/kubelet" "$ROOT/pod-logs"
    install_packages
    BIN="$("$HERE/tools.sh" cluster | tail -n 1)"
    make_pki
    make_bridge
    write_configs

    start_daemon etcd etcd --name mlstack --data-dir "$ROOT/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster mlstack=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
    start_daemon containerd containerd --config "$ROOT/conf/containerd.toml"
    wait_for "containerd" 30 ctr -a "$CTR_SOCK" version
    build_system_images
    load_images "$SANDBOX_IMAGE" "$COREDNS_IMAGE"

    start_daemon kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
        --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" --kubelet-certificate-authority="$PKI/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction
    wait_for "kube-apiserver" "$START_TIMEOUT" kubectl get --raw /readyz
    start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig="$PKI/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --root-ca-file="$PKI/ca.crt" \
        --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=true \
        --service-cluster-ip-range="$SERVICE_CIDR" --bind-address=127.0.0.1 --leader-elect=false
    start_daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$PKI/scheduler.kubeconfig" \
        --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --leader-elect=false
    start_daemon kubelet "$BIN/kubelet" --config="$ROOT/conf/kubelet.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
        --root-dir="$ROOT/kubelet" --hostname-override="$NODE" --node-ip="$NODE_IP"
    start_daemon kube-proxy "$BIN/kube-proxy" --config="$ROOT/conf/kube-proxy.yaml"
    wait_for "node $NODE" "$START_TIMEOUT" kubectl get node "$NODE"
    kubectl wait --for=condition=Ready "node/$NODE" --timeout="${START_TIMEOUT}s" >/dev/null

    # Cluster DNS: CoreDNS with its Service at $DNS_SERVICE_IP (the kubelet's clusterDNS).
    sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/" -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#" "$HERE/coredns.yaml" \
        | kubectl apply -f - >/dev/null
    kubectl -n kube-system rollout status deployment/coredns --timeout="${START_TIMEOUT}s" >/dev/null
}

stop_cluster() {
    local task mount
    BIN="$REPO/.tools/bin"
    for name in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver; do
        stop_daemon "$name"
    done
    # The pods' containers: killed through containerd (they are its children, not ours), then containerd itself.
    if pid_alive containerd; then
        for task in $(ctr -a "$CTR_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr -a "$CTR_SOCK" -n k8s.io tasks kill -s KILL "$task" >/dev/null 2>&1 || true
        done
        sleep 1
    fi
    stop_daemon containerd
    stop_daemon etcd
    [ ! -x "$BIN/kube-proxy" ] || "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    # Only the chains kube-proxy and the CNI plugins made (KUBE-*, CNI-*) and rules naming them; others are kept.
    if iptables-save 2>/dev/null | grep -qE 'KUBE-|CNI-'; then
        iptables-save | grep -vE 'KUBE-|CNI-' | iptables-restore
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
        ip netns del "$ns" 2>/dev/null || true
    done
    # Mounts left under our directories (container root filesystems, pod volumes, netns bind mounts).
    while read -r mount; do
        umount -l "$mount" 2>/dev/null || true
    done < <(awk -v root="$ROOT" -v run="$RUN" 'index($2, root) == 1 || index($2, run) == 1 {print $2}' /proc/mounts \
        | sort -r)
}

status() {
    BIN="$REPO/.tools/bin"
    [ -x "$BIN/kubectl" ] && [ -f "$KUBECONFIG_ADMIN" ] || return 1
    kubectl get --raw /readyz >/dev/null 2>&1 || return 1
    [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

main() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network bridge, iptables, containerd, kubelet)"
    BIN="$REPO/.tools/bin"
    case "${1:-}" in
        up)
            local began=$SECONDS
            start_cluster
            log "cluster ready in $((SECONDS - began)) s"
            print_env
            ;;
        env) print_env ;;
        status) status ;;
        load)
            shift
            load_images "$@"
            ;;
        down)
            stop_cluster
            log "cluster stopped"
            ;;
        *)
            sed -n '2,12p' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
