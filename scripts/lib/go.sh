# A Go toolchain for building the pinned Go tools (FerretDB, versitygw in scripts/install.sh; Helm in
# scripts/k8s/tools.sh). Source it after scripts/lib/apt.sh; it calls the caller's `log`. setup_go exports PATH,
# CGO_ENABLED and GOTOOLCHAIN for the go commands that follow.

# versitygw's go.mod asks for Go 1.25 (FerretDB's for 1.24). An older Go (>= 1.21, e.g. Debian backports'
# golang-1.23-go) fetches this toolchain through the Go module proxy itself, like a module.
GO_MIN="1.25"
GO_TOOLCHAIN="go1.27.3"
GO_BACKPORTS="1.23"   # Debian's golang-1.23-go in bookworm-backports, installed under /usr/lib/go-1.23

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
    # Once per run: several tools may need it.
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
        local began=$SECONDS
        install_backports_go
        log "Go from Debian backports: $((SECONDS - began)) s"
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

# The source of a Go module, from the module proxy, copied writable into DIR (an empty dir), for a module that
# `go install MODULE@VERSION` cannot build (a replace directive in its go.mod, a generated file it lacks): the
# caller builds it there as the main module.
go_module_source() {  # go_module_source MODULE@VERSION DIR
    local src
    # Run in DIR, outside any module, so go.mod files around do not matter.
    src="$(cd "$2" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -d "$src" ] || { log "go mod download gave no source dir for $1"; exit 1; }
    cp -R "$src/." "$2/"
    chmod -R u+w "$2"
}

# One build of a tool at a time across processes: scripts/test.sh starts the slow builds in the background while
# the tests run, and a test that needs a tool runs its build script, which then waits for that build instead of
# starting a second one. Callers check "already built?" again once they hold the lock.
BUILD_LOCK_FD=""
build_lock() {  # build_lock NAME: wait for the lock of one tool's build (.tools/.build-NAME.lock) and hold it
    mkdir -p "$REPO/.tools"
    exec {BUILD_LOCK_FD}>"$REPO/.tools/.build-$1.lock"
    if ! flock -n "$BUILD_LOCK_FD"; then
        log "waiting for the $1 build already running (another process holds .tools/.build-$1.lock)"
        flock "$BUILD_LOCK_FD"
    fi
}

build_unlock() {
    [ -z "$BUILD_LOCK_FD" ] || exec {BUILD_LOCK_FD}>&-
    BUILD_LOCK_FD=""
}
