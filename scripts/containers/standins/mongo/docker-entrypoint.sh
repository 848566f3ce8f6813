#!/bin/sh
# `mongod [args]` starts FerretDB on 0.0.0.0:27017 with data in /data/db; MONGO_INITDB_ROOT_USERNAME/PASSWORD
# become FerretDB's setup user in the admin database (used only while no user exists, like the official image).
set -eu
if [ "${1:-mongod}" = "mongod" ] || [ "${1#-}" != "${1:-x}" ]; then
    if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ] && [ -n "${MONGO_INITDB_ROOT_PASSWORD:-}" ]; then
        export FERRETDB_TEST_ENABLE_NEW_AUTH=true
        export FERRETDB_SETUP_USERNAME="$MONGO_INITDB_ROOT_USERNAME"
        export FERRETDB_SETUP_PASSWORD="$MONGO_INITDB_ROOT_PASSWORD"
        export FERRETDB_SETUP_DATABASE=admin
    fi
    export FERRETDB_TELEMETRY=disable
    exec ferretdb \
        --handler=sqlite \
        --sqlite-url=file:/data/db/ \
        --state-dir=/data/configdb \
        --listen-addr=0.0.0.0:27017 \
        --debug-addr=127.0.0.1:8088 \
        --log-level="${FERRETDB_LOG_LEVEL:-WARN}"
fi
exec "$@"
