#!/usr/bin/env bash
# Installs what the tests and the native dev stack need: Debian packages, FerretDB and versitygw (built with
# Go into .tools/bin), newman and openapi-to-postmanv2 (npm, into .tools/node) and the Python venv (.venv). Safe to re-run; each step
# is skipped when its result is already there, so a warm run takes about a second.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
BIN="$TOOLS/bin"
VENV="$REPO/.venv"

FERRETDB_VERSION="v1.24.2"   # last release with the SQLite backend
VERSITYGW_VERSION="v1.7.0"
# npm packages, one `npm install` for all: a second install into the same prefix would remove the first's.
# newman runs the Postman collection; openapi-to-postmanv2 converts the OpenAPI documents into it (scripts/postman.py).
NPM_PACKAGES=(newman@6.2.2 openapi-to-postmanv2@6.3.3)
PYTHON="${PYTHON:-python3.11}"
# Editable installs, in dependency order; a folder without pyproject.toml yet is skipped with a warning.
PACKAGES=(core serving-flask etl-flask-scheduler training-flask-scheduler)

CLEANUP=()
cleanup() { if [ "${#CLEANUP[@]}" -gt 0 ]; then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

# versitygw's go.mod asks for Go 1.25 (FerretDB's for 1.24). An older Go (>= 1.21, e.g. Debian backports'
# golang-1.23-go) fetches this toolchain through the Go module proxy itself, like a module.
GO_MIN="1.25"
GO_TOOLCHAIN="go1.27.3"
GO_BACKPORTS="1.23"   # Debian's golang-1.23-go in bookworm-backports, installed under /usr/lib/go-1.23

# apt_uri SUITE: the Debian mirror this machine already uses for a suite.
# shellcheck source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

log() { printf '[install] %s\n' "$*" >&2; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "needs root for: $*"
        log "run scripts/install.sh as root, or install sudo and give this user sudo rights"
        exit 1
    fi
}
# Runs one step and says how long it took (a first install takes minutes: each step is visible).
step() {
    local name="$1" began=$SECONDS
    shift
    "$@"
    log "$name: $((SECONDS - began)) s"
}

apt_install() {
    # No package may start a system service here: nginx on port 80 and Prometheus on 9090 would take the ports
    # the compose stack publishes. policy-rc.d (exit 101) refuses the start during the install; units the
    # install enabled are disabled after it, so a reboot does not start them either.
    local added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        added=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || rc=$?
    if [ -n "$added" ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    if [ -d /run/systemd/system ]; then
        case " $* " in *" nginx-light "*) as_root systemctl disable --now nginx >/dev/null 2>&1 || true ;; esac
        case " $* " in *" prometheus "*) as_root systemctl disable --now prometheus >/dev/null 2>&1 || true ;; esac
    fi
}

install_debian_packages() {
    local missing=()
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v "$PYTHON" >/dev/null 2>&1 || missing+=("$PYTHON")
    # Debian splits venv/ensurepip off the interpreter.
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("$PYTHON-venv")
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    # Headless Chromium is for the UI screenshot check; fonts make text render.
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || missing+=(chromium fonts-liberation)
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    log "apt-get install ${missing[*]} (Debian packages; a first install downloads a few hundred MB)"
    as_root apt-get update -q
    apt_install "${missing[@]}"
}

# A Go's version as "1.23.4", or nothing when it is not a usable go command.
go_version() {  # the version of the go binary itself, not of a toolchain GOTOOLCHAIN would switch to
    local out
    out="$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null)" || return 0
    printf '%s' "${out#go}"
}

version_at_least() {  # version_at_least HAVE WANT
    local sorted
    sorted="$(printf '%s\n%s\n' "$2" "$1" | sort -V)"
    [ "${sorted%%$'\n'*}" = "$2" ]
}

install_backports_go() {
    local policy list=/etc/apt/sources.list.d/mlstack-bookworm-backports.sources uri
    policy="$(apt-cache policy "golang-$GO_BACKPORTS-go" 2>/dev/null || true)"
    if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
        uri="$(apt_uri bookworm)"
        [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt sources; install Go >= 1.21 and re-run"; exit 1; }
        log "adding bookworm-backports from $uri (for golang-$GO_BACKPORTS-go)"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            "$uri" /usr/share/keyrings/debian-archive-keyring.gpg | as_root tee "$list" >/dev/null
        as_root apt-get update -q
    fi
    log "apt-get install -t bookworm-backports golang-$GO_BACKPORTS-go"
    apt_install -t bookworm-backports "golang-$GO_BACKPORTS-go"
}

GO_READY=""
setup_go() {
    # The first Go that can switch toolchains (>= 1.21): PATH's, /usr/local/go, Debian's versioned packages.
    # Once per run: FerretDB and versitygw both need it.
    [ -z "$GO_READY" ] || return 0
    local candidate go_bin="" version
    for candidate in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go-1.2[1-9]/bin/go; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        version="$(go_version "$candidate")"
        if [ -n "$version" ] && version_at_least "$version" 1.21; then
            go_bin="$candidate"
            break
        fi
    done
    if [ -z "$go_bin" ]; then
        step "Go from Debian backports" install_backports_go
        go_bin="/usr/lib/go-$GO_BACKPORTS/bin/go"
        version="$(go_version "$go_bin")"
    fi
    export PATH="$(dirname "$go_bin"):$PATH" CGO_ENABLED=0
    if version_at_least "$version" "$GO_MIN"; then
        # Never let a recent enough Go fetch a toolchain behind our back.
        export GOTOOLCHAIN=local
    else
        log "Go $version is older than $GO_MIN: the go command fetches $GO_TOOLCHAIN through the module proxy (about 76 MB)"
        export GOTOOLCHAIN="$GO_TOOLCHAIN"
    fi
    GO_READY=1
}

# Version checks read the whole output first: `cmd | grep -q` under pipefail fails at random when grep exits
# early and the command dies of SIGPIPE writing its remaining lines.
ferretdb_ok() {
    [ -x "$BIN/ferretdb" ] || return 1
    local out
    out="$("$BIN/ferretdb" --version 2>/dev/null)" || return 1
    grep -qx "version: $FERRETDB_VERSION" <<<"$out"
}

install_ferretdb() {
    if ferretdb_ok; then
        return
    fi
    setup_go
    log "building ferretdb $FERRETDB_VERSION"
    # A plain `go install ...@v1.24.2` builds a binary that panics at start-up: the module lacks the
    # generated build/version/version.txt. So build the module's source with that file written.
    local src work
    work="$(mktemp -d)"
    CLEANUP+=("$work")
    # Run outside any module (an empty dir) so go.mod files around do not matter.
    src="$(cd "$work" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -d "$src" ] || { log "go mod download gave no source dir for FerretDB"; exit 1; }
    cp -R "$src/." "$work/"
    chmod -R u+w "$work"
    echo "$FERRETDB_VERSION" >"$work/build/version/version.txt"
    mkdir -p "$BIN"
    (cd "$work" && go build -trimpath -buildvcs=false -o "$BIN/ferretdb.new" ./cmd/ferretdb)
    mv -f "$BIN/ferretdb.new" "$BIN/ferretdb"
    if ! ferretdb_ok; then
        log "built ferretdb does not report $FERRETDB_VERSION; it printed:"
        "$BIN/ferretdb" --version >&2 || true
        exit 1
    fi
}

versitygw_ok() {
    [ -x "$BIN/versitygw" ] || return 1
    local out
    out="$("$BIN/versitygw" --version 2>/dev/null || true)"
    grep -q "Version *: ${VERSITYGW_VERSION}\$" <<<"$out" && return 0
    # A build without our -ldflags says "git"; the module version recorded in the binary still tells.
    local go_bin
    go_bin="$(command -v go || echo /usr/local/go/bin/go)"
    [ -x "$go_bin" ] || return 1
    out="$("$go_bin" version -m "$BIN/versitygw" 2>/dev/null || true)"
    grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+${VERSITYGW_VERSION}[[:space:]]" <<<"$out"
}

install_versitygw() {
    if versitygw_ok; then
        return
    fi
    setup_go
    log "building versitygw $VERSITYGW_VERSION"
    mkdir -p "$BIN"
    GOBIN="$BIN" go install -trimpath -ldflags "-X main.Version=$VERSITYGW_VERSION" \
        "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
    versitygw_ok || { log "built versitygw does not report $VERSITYGW_VERSION"; exit 1; }
}

npm_packages_ok() {
    local spec name version pkg
    for spec in "${NPM_PACKAGES[@]}"; do
        name="${spec%@*}" version="${spec##*@}"
        pkg="$TOOLS/node/node_modules/$name/package.json"
        [ -f "$pkg" ] && [ "$(node -p "require('$pkg').version" 2>/dev/null)" = "$version" ] || return 1
    done
}

install_npm_packages() {
    if ! npm_packages_ok; then
        log "npm install ${NPM_PACKAGES[*]}"
        mkdir -p "$TOOLS/node"
        # --no-package-lock/--no-save: nothing with registry URLs is written, and only under .tools (ignored).
        npm install --prefix "$TOOLS/node" --no-package-lock --no-save --no-audit --no-fund --loglevel=error \
            "${NPM_PACKAGES[@]}" >/dev/null
        npm_packages_ok || { log "npm did not install ${NPM_PACKAGES[*]}"; exit 1; }
    fi
    mkdir -p "$BIN"
    ln -sfn ../node/node_modules/.bin/newman "$BIN/newman"
    ln -sfn ../node/node_modules/.bin/openapi2postmanv2 "$BIN/openapi2postmanv2"
}

venv_stamp() {
    # Everything that decides the venv's contents: a change to any of these means reinstall.
    local dir
    {
        "$PYTHON" -c 'import sys; print(sys.version)'
        sha256sum "$REPO/constraints.txt" "$REPO/requirements-dev.txt" | cut -d' ' -f1
        for dir in "${PACKAGES[@]}"; do
            if [ -f "$REPO/$dir/pyproject.toml" ]; then
                echo "$dir $(sha256sum <"$REPO/$dir/pyproject.toml" | cut -d' ' -f1)"
            else
                echo "$dir missing"
            fi
        done
    } | sha256sum | cut -d' ' -f1
}

install_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || { log "$PYTHON not found on PATH"; exit 1; }
    local stamp_file="$VENV/.install-stamp" stamp dir
    stamp="$(venv_stamp)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        return
    fi
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating $VENV with $PYTHON"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local editable=()
    for dir in "${PACKAGES[@]}"; do
        if [ -f "$REPO/$dir/pyproject.toml" ]; then
            editable+=(-e "$REPO/$dir")
        else
            log "WARNING: $dir has no pyproject.toml yet; not installing it"
        fi
    done
    log "pip install (constraints.txt, requirements-dev.txt, ${#editable[@]} editable args)"
    rm -f "$stamp_file"
    # One resolve for everything, so the editable packages' dependencies honour the same pins.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$REPO/constraints.txt" -r "$REPO/requirements-dev.txt" "${editable[@]}"
    echo "$stamp" >"$stamp_file"
}

main() {
    local started=$SECONDS
    cd "$REPO"
    step "Debian packages" install_debian_packages
    mkdir -p "$BIN"
    step "FerretDB" install_ferretdb
    step "versitygw" install_versitygw
    step "npm packages" install_npm_packages
    step "Python venv" install_venv
    log "done in $((SECONDS - started))s (tools in $BIN, venv in $VENV)"
}

main "$@"
