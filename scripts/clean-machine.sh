#!/usr/bin/env bash
# The clean-machine check: the README's commands on a clean Debian 12, inside a root filesystem made here.
#
#   scripts/clean-machine.sh            build a minimal Debian 12 (debootstrap --variant=minbase), clone this
#                                       repository into it, and run there (chroot, host network), as root:
#                                         scripts/install.sh (leaving no service running), then make dev until
#                                         serving, ETL and training answer /ready and one prediction is
#                                         served, then Ctrl-C (SIGINT)
#                                       and a check that every process of the stack has exited.
#
# Nothing of the host's installed tools is shared: the clean system gets only the host's CA bundle and local CAs
# (the package proxy here intercepts TLS) and DNS configuration. MLSTACK_CLEAN_CACHE=DIR keeps downloads (debootstrap's and
# apt's packages, pip's, Go's and npm's caches) across runs; the system itself is new every run.
# MLSTACK_CLEAN_SOURCE=DIR clones another checkout (e.g. one with an install step removed, to see this fail).
# Needs root (debootstrap, chroot, mounts). .ci/run runs it after the test command.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE="${MLSTACK_CLEAN_SOURCE:-$REPO}"
CACHE="${MLSTACK_CLEAN_CACHE:-}"
SUITE="bookworm"
READY_TIMEOUT="${MLSTACK_CLEAN_READY_TIMEOUT:-600}"   # make dev: install (warm) + stack start + first champion
STOP_TIMEOUT=90
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# shellcheck source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

log() { printf '[clean-machine] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
step() {
    local name="$1" began=$SECONDS
    shift
    log "$name ..."
    "$@"
    log "$name: $((SECONDS - began)) s"
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mounts); run it as root or with sudo"

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/mlstack-clean-machine.XXXXXX")"
ROOT="$WORK/rootfs"
MOUNTS=()
DEV_PID=""

stack_pids() {
    # Every process whose root directory is the clean system (what make dev started in it).
    local proc
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/root" 2>/dev/null)" = "$ROOT" ] && echo "${proc#/proc/}"
    done
    return 0
}

nothing_running() {  # nothing_running WHAT: fail, listing them, if any process runs in the clean system
    local left
    left="$(stack_pids | tr '\n' ' ')"
    [ -z "$left" ] || { ps -o pid,args -p "${left// /,}" >&2 || true; die "processes $1: $left"; }
}

cleanup() {
    local rc=$? pid i
    if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
        kill -INT -- "-$DEV_PID" 2>/dev/null || true
        sleep 5
    fi
    for pid in $(stack_pids); do kill -KILL "$pid" 2>/dev/null || true; done
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
    if [ -n "${MLSTACK_CLEAN_KEEP:-}" ]; then
        log "kept $WORK"
    elif ! grep -q " $WORK/" /proc/mounts; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

mount_in() {  # mount_in TARGET MOUNT-ARGS...
    local target="$ROOT$1"
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTS+=("$target")
}

# A plain environment: what a root login on a fresh machine has, plus where the CA bundle is (pip, Node and Go
# read these; the host sets the same).
CLEAN_ENV=(HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    PIP_CERT="$CA_BUNDLE" NODE_EXTRA_CA_CERTS="$CA_BUNDLE" SSL_CERT_FILE="$CA_BUNDLE")

in_clean() {  # a command inside the clean system, as root, with a plain environment
    chroot "$ROOT" /usr/bin/env -i "${CLEAN_ENV[@]}" "$@"
}

make_rootfs() {
    local mirror security args=(--variant=minbase)
    mirror="$(apt_uri "$SUITE")"
    security="$(apt_uri "$SUITE-security")"
    [ -n "$mirror" ] || die "no Debian source for $SUITE in /etc/apt"
    command -v debootstrap >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; }
    }
    if [ -n "$CACHE" ]; then
        mkdir -p "$CACHE/debootstrap"
        args+=(--cache-dir="$CACHE/debootstrap")
    fi
    debootstrap "${args[@]}" "$SUITE" "$ROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
    {
        echo "deb $mirror $SUITE main"
        echo "deb $mirror $SUITE-updates main"
        [ -n "$security" ] && echo "deb $security $SUITE-security main"
    } >"$ROOT/etc/apt/sources.list"
    # The host's local CAs where Debian keeps them, so update-ca-certificates (run when install.sh installs the
    # ca-certificates package) keeps them in the bundle it rebuilds; and the bundle itself until then.
    mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
    cp "$CA_BUNDLE" "$ROOT$CA_BUNDLE"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    cp /etc/hosts "$ROOT/etc/hosts"
    log "$(du -sh "$ROOT" 2>/dev/null | cut -f1) clean Debian $SUITE (minbase)"
    mount_in /proc -t proc proc
    mount_in /sys -t sysfs sysfs
    mount_in /dev --bind /dev
    mount_in /dev/pts --bind /dev/pts
    mount_in /dev/shm -t tmpfs tmpfs
    mount_in /run -t tmpfs tmpfs
    if [ -n "$CACHE" ]; then
        local dir
        for dir in apt pip go npm; do mkdir -p "$CACHE/$dir"; done
        mount_in /var/cache/apt/archives --bind "$CACHE/apt"
        mount_in /root/.cache/pip --bind "$CACHE/pip"
        mount_in /root/go/pkg/mod --bind "$CACHE/go"
        mount_in /root/.npm --bind "$CACHE/npm"
    fi
}

copy_repository() {
    git clone -q "$SOURCE" "$ROOT/root/mlstack"
    log "cloned $(git -C "$SOURCE" rev-parse --short HEAD) into the clean system"
}

system_mb() {  # system_mb [DIR...]: MB in the clean system (caches included, where MLSTACK_CLEAN_CACHE mounts them)
    local dirs=("$@")
    [ ${#dirs[@]} -gt 0 ] || dirs=("$ROOT")
    du -smc --exclude="$ROOT/proc" --exclude="$ROOT/sys" --exclude="$ROOT/dev" --exclude="$ROOT/run" \
        "${dirs[@]}" 2>/dev/null | awk 'END { print $1 }'
}

run_install() {
    local before where
    before="$(system_mb)"
    in_clean bash -c 'cd /root/mlstack && scripts/install.sh' >"$WORK/install.log" 2>&1 \
        || { tail -n 40 "$WORK/install.log" >&2; die "scripts/install.sh in the clean system"; }
    grep -E '^\[install\] .*: [0-9]+ s$' "$WORK/install.log" >&2 || true
    # Debian's nginx and prometheus packages start their services on install; ours must leave nothing running.
    nothing_running "left running by the install"
    log "disk used by the install: $(( $(system_mb) - before )) MB (a warm MLSTACK_CLEAN_CACHE holds some of it already)"
    for where in /usr /var/cache/apt /root/.cache/go-build /root/go/pkg/mod /root/.cache/pip /root/.npm \
        /root/sdk /root/mlstack/.venv /root/mlstack/.tools; do
        [ -d "$ROOT$where" ] && log "  $where: $(system_mb "$ROOT$where") MB"
    done
    return 0
}

url_of() {  # url_of NAME: the URL make dev printed for a service
    awk -v name="$1" '$1 == name && $2 ~ /^http/ { print $2; exit }' "$WORK/dev.log"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 40 "$WORK/dev.log" >&2; die "$what within ${deadline}s"; }
        kill -0 "$DEV_PID" 2>/dev/null || { tail -n 40 "$WORK/dev.log" >&2; die "make dev exited before $what"; }
        sleep 2
    done
}

answers_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$1")" = "200" ]; }
all_ready() {
    local name
    for name in serving etl training; do answers_200 "$(url_of "$name")/ready" || return 1; done
}

run_make_dev() {
    # setsid: make dev leads its own process group, so the SIGINT below reaches it as Ctrl-C would.
    setsid chroot "$ROOT" /usr/bin/env -i "${CLEAN_ENV[@]}" bash -c 'cd /root/mlstack && exec make dev' >"$WORK/dev.log" 2>&1 &
    DEV_PID=$!
    wait_for "$READY_TIMEOUT" "make dev printing its URLs" grep -q '^devstack is up:' "$WORK/dev.log"
    sed -n '/^devstack is up:/,/Press Ctrl-C/p' "$WORK/dev.log" | grep -v -e 'admin token' -e 'mlflow login' >&2
    wait_for "$READY_TIMEOUT" "serving, ETL and training answering /ready" all_ready
}

predict_once() {
    local body answer
    body='{"fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, "residual sugar": 1.9,
      "chlorides": 0.076, "free sulfur dioxide": 11.0, "total sulfur dioxide": 34.0, "density": 0.9978,
      "pH": 3.51, "sulphates": 0.56, "alcohol": 9.4}'
    answer="$(curl -s --max-time 30 -H 'Content-Type: application/json' -d "$body" "$(url_of serving)/predict")"
    python3 -c 'import json, sys; a = json.loads(sys.argv[1]); assert isinstance(a["prediction"], float), a' \
        "$answer" 2>/dev/null || die "POST /predict answered: ${answer:0:300}"
    log "POST /predict: $answer"
}

stop_stack() {
    kill -INT -- "-$DEV_PID"
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$DEV_PID" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "make dev still running ${STOP_TIMEOUT} s after Ctrl-C"
        sleep 1
    done
    DEV_PID=""
    nothing_running "left after Ctrl-C"
}

main() {
    local began=$SECONDS
    step "debootstrap a clean Debian $SUITE" make_rootfs
    step "clone the repository" copy_repository
    step "scripts/install.sh (the README's install)" run_install
    step "make dev until every service is ready" run_make_dev
    step "one prediction" predict_once
    step "Ctrl-C, everything stops" stop_stack
    log "passed in $((SECONDS - began)) s"
}

# One call on the last line: bash has read the whole script before it runs, so editing it meanwhile is safe.
main; exit
