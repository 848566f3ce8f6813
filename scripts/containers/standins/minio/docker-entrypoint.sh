#!/bin/sh
# `server DIR [--console-address ADDR]` serves DIR over the S3 API on :9000 with MINIO_ROOT_USER/PASSWORD as the
# root keys. The root user comes from the environment at every start, so the IAM dir (for any other users) is
# kept outside DIR, where it would show up as a bucket; it is writable by any user, since the official image also
# runs under an arbitrary uid (the Helm chart's trial S3 runs as 1000) and writes only DIR.
set -eu
if [ "${1:-}" = "server" ]; then
    shift
    data="${1:-/data}"
    : "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
    : "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
    mkdir -p /var/lib/versitygw/iam
    ROOT_ACCESS_KEY="$MINIO_ROOT_USER" ROOT_SECRET_KEY="$MINIO_ROOT_PASSWORD" \
        exec versitygw --port :9000 --health /minio/health/live --quiet \
        --iam-dir /var/lib/versitygw/iam posix "$data"
fi
exec "$@"
