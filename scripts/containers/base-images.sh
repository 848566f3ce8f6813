#!/usr/bin/env bash
# Makes the third-party images the Dockerfiles and compose files name, as local stand-ins, on the project's own
# engine (scripts/containers/engine.sh), for machines that cannot pull from a registry (CI here).
#
#   scripts/containers/base-images.sh          build what is missing or out of date, print one line per image
#   scripts/containers/base-images.sh --list   print the tags it makes
#
# Each stand-in is tagged exactly like the official image and labelled org.mlstack.standin=true plus a hash of
# what it is made from (its folder under standins/, the binaries copied in, the image it is built on), so a
# re-run skips what exists and rebuilds only what changed. See standins/README.md for what each one honours.
# Needs root (debootstrap) and, for mongo/minio, the FerretDB and versitygw binaries that scripts/install.sh
# builds into .tools/bin (or FERRETDB_BIN / VERSITYGW_BIN); for jaeger, the binary scripts/tracing/jaeger.sh
# builds (run here: instant once built, minutes the first time) or JAEGER_BIN.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STANDINS="$HERE/standins"

# Keep in step with the Dockerfiles (FROM) and compose files (image:); the container tests check both.
DEBIAN_TAG="debian:bookworm-slim"
PYTHON_TAG="python:3.11-slim-bookworm"
NGINX_TAG="nginx:1.28.0"
PROMETHEUS_TAG="prom/prometheus:v3.4.0"
ALERTMANAGER_TAG="prom/alertmanager:v0.28.1"
MONGO_TAG="mongo:7.0"
MINIO_TAG="minio/minio:RELEASE.2025-04-22T22-12-26Z"
POSTGRES_TAG="postgres:16.9"
JAEGER_TAG="jaegertracing/jaeger:2.12.0"
SUITE="bookworm"

FERRETDB_BIN="${FERRETDB_BIN:-$REPO/.tools/bin/ferretdb}"
VERSITYGW_BIN="${VERSITYGW_BIN:-$REPO/.tools/bin/versitygw}"
JAEGER_BIN="${JAEGER_BIN:-}"
BUILD_TIMEOUT="${MLSTACK_STANDIN_BUILD_TIMEOUT:-900}"
HASH_LABEL="org.mlstack.standin-hash"

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { printf '[base-images] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "$DEBIAN_TAG" "$PYTHON_TAG" "$NGINX_TAG" "$PROMETHEUS_TAG" "$ALERTMANAGER_TAG" "$MONGO_TAG" "$MINIO_TAG" \
        "$POSTGRES_TAG" "$JAEGER_TAG"
    exit 0
fi

eval "$("$HERE/engine.sh" env)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no engine answers at $DOCKER_HOST: run scripts/containers/engine.sh start first"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mlstack-base-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# apt_uri SUITE: the machine's own Debian mirror for a suite (no mirror name is written into the repository).
# shellcheck source=../lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

label_of() { docker image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect --format '{{.Id}}' "$1"; }
hash_of() { sha256sum | cut -c1-16; }

# The hash of a stand-in folder's files (names and contents) plus any extra lines (base image id, binaries).
folder_hash() {
    local dir="$1"
    shift
    {
        (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        printf '%s\n' "$@"
    } | hash_of
}

up_to_date() {
    local tag="$1" hash="$2"
    if [ "$(label_of "$tag")" = "$hash" ]; then
        log "cached  $tag"
        return 0
    fi
    return 1
}

build_debian() {
    local mirror security hash started=$SECONDS rootfs="$WORK/rootfs"
    mirror="${MLSTACK_DEBIAN_MIRROR:-$(apt_uri "$SUITE")}"
    security="${MLSTACK_DEBIAN_SECURITY_MIRROR:-$(apt_uri "$SUITE-security")}"
    [ -n "$mirror" ] || die "no Debian source for $SUITE in /etc/apt (set MLSTACK_DEBIAN_MIRROR)"
    hash="$(printf 'debian-minbase-v1 %s %s %s\n' "$SUITE" "$mirror" "$security" | hash_of)"
    up_to_date "$DEBIAN_TAG" "$hash" && return
    command -v debootstrap >/dev/null 2>&1 || {
        log "apt-get install debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    }
    log "debootstrap --variant=minbase $SUITE (from the machine's apt source)"
    timeout "$BUILD_TIMEOUT" debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    {
        echo "deb $mirror $SUITE main"
        echo "deb $mirror $SUITE-updates main"
        [ -n "$security" ] && echo "deb $security $SUITE-security main"
    } >"$rootfs/etc/apt/sources.list"
    # Like the official slim image: no package caches, no docs in later installs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
    tar -C "$rootfs" -c . | docker import \
        --change "LABEL org.mlstack.standin=true $HASH_LABEL=$hash" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$DEBIAN_TAG" >/dev/null
    rm -rf "$rootfs"
    log "built   $DEBIAN_TAG in $((SECONDS - started))s"
}

# build_standin NAME TAG [FILE...]: build standins/NAME (plus FILEs copied into its context) as TAG.
build_standin() {
    local name="$1" tag="$2" started=$SECONDS hash ctx file extra=()
    shift 2
    extra+=("base $(image_id "$DEBIAN_TAG")")
    for file in "$@"; do
        [ -f "$file" ] || die "$name stand-in needs $file (scripts/install.sh or scripts/tracing/jaeger.sh builds it)"
        extra+=("$(basename "$file") $(sha256sum <"$file" | cut -d' ' -f1)")
    done
    hash="$(folder_hash "$STANDINS/$name" "${extra[@]}")"
    up_to_date "$tag" "$hash" && return
    ctx="$WORK/ctx-$name"
    mkdir -p "$ctx"
    cp -a "$STANDINS/$name/." "$ctx/"
    for file in "$@"; do
        cp "$file" "$ctx/$(basename "$file")"
    done
    log "building $tag"
    # Host networking: the engine runs without NAT, and apt needs the Debian mirror.
    if ! timeout "$BUILD_TIMEOUT" docker build --network host --label org.mlstack.standin=true \
        --label "$HASH_LABEL=$hash" -t "$tag" "$ctx" >"$WORK/build-$name.log" 2>&1; then
        tail -n 30 "$WORK/build-$name.log" >&2
        die "building the $name stand-in ($tag) failed"
    fi
    rm -rf "$ctx"
    log "built   $tag in $((SECONDS - started))s"
}

main() {
    local started=$SECONDS
    [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap)"
    build_debian
    # The python stand-in trusts the host's CA bundle: build steps reach the index through a TLS-inspecting proxy.
    build_standin python "$PYTHON_TAG" /etc/ssl/certs/ca-certificates.crt
    build_standin nginx "$NGINX_TAG"
    build_standin prometheus "$PROMETHEUS_TAG"
    build_standin alertmanager "$ALERTMANAGER_TAG"
    build_standin mongo "$MONGO_TAG" "$FERRETDB_BIN"
    build_standin minio "$MINIO_TAG" "$VERSITYGW_BIN"
    build_standin postgres "$POSTGRES_TAG"
    # JAEGER_BIN is copied under its own name: the Dockerfile copies a file named jaeger (as mongo's, ferretdb).
    if [ -z "$JAEGER_BIN" ]; then
        JAEGER_BIN="$("$REPO/scripts/tracing/jaeger.sh" | tail -n 1)" || die "scripts/tracing/jaeger.sh failed"
    fi
    build_standin jaeger "$JAEGER_TAG" "$JAEGER_BIN"
    log "all stand-ins ready in $((SECONDS - started))s"
}

main "$@"
