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

# apt_uri, as_root, apt_install (Debian packages); setup_go (a Go that builds the pinned tools).
# shellcheck source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"
# shellcheck source=lib/go.sh
. "$REPO/scripts/lib/go.sh"

log() { printf '[install] %s\n' "$*" >&2; }
# Runs one step and says how long it took (a first install takes minutes: each step is visible).
step() {
    local name="$1" began=$SECONDS
    shift
    "$@"
    log "$name: $((SECONDS - began)) s"
}

install_debian_packages() {
    local missing=()
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v "$PYTHON" >/dev/null 2>&1 || missing+=("$PYTHON")
    # Debian splits venv/ensurepip off the interpreter.
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("$PYTHON-venv")
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # Alertmanager (the native stack's, started by devstack) and amtool (the config check).
    command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
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
    local work
    work="$(mktemp -d)"
    CLEANUP+=("$work")
    go_module_source "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" "$work"
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
