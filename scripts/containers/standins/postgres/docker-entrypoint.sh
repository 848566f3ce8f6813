#!/bin/bash
# First start on an empty data dir: initdb with POSTGRES_USER/POSTGRES_PASSWORD (SCRAM over TCP, trust on the
# local socket like the official image), create POSTGRES_DB; then run postgres listening on every address.
set -euo pipefail
if [ "${1:-postgres}" = "postgres" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        initdb --pgdata="$PGDATA" --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
            --auth-host=scram-sha-256 --auth-local=trust --encoding=UTF8 >/dev/null
        printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
        if [ "$db" != "postgres" ]; then
            echo "CREATE DATABASE \"$db\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
        fi
    fi
    exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "${@:2}"
fi
exec "$@"
