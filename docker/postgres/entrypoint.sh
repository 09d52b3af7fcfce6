#!/usr/bin/env bash
# The entrypoint of docker/postgres.Dockerfile: the official postgres image's
# contract, for the variables the manifests use.
#
# On an empty PGDATA: initdb with POSTGRES_USER (default postgres) as the
# superuser and POSTGRES_PASSWORD as its password, host connections from any
# address with POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), listening on
# every interface; then POSTGRES_DB (default: the user's name) is created and
# any *.sql or *.sh in /docker-entrypoint-initdb.d run. On a PGDATA that holds
# a cluster, the variables are ignored and the cluster starts as it is, as with
# the official image. Runs as the user the container starts as (uid 999).
set -Eeuo pipefail

say() { echo "postgres-entrypoint: $*" >&2; }

# VAR or VAR_FILE (the official image reads Docker secrets this way).
file_env() {
    local var=$1 default=${2:-} file_var="${1}_FILE"
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        say "both $var and $file_var are set; set one"
        exit 1
    fi
    local value=$default
    if [ -n "${!var:-}" ]; then
        value=${!var}
    elif [ -n "${!file_var:-}" ]; then
        value=$(< "${!file_var}")
    fi
    export "$var"="$value"
    unset "$file_var"
}

# `docker run IMAGE -c shared_buffers=256MB` means postgres with those options.
if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi

: "${PGDATA:?PGDATA must be set}"
file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
POSTGRES_HOST_AUTH_METHOD=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if ! mkdir -p "$PGDATA" 2>/dev/null || [ ! -w "$PGDATA" ]; then
    say "cannot write PGDATA=$PGDATA as uid $(id -u): give the volume to this user (fsGroup, or chown)"
    exit 1
fi
# initdb refuses a data folder that others can read.
chmod 700 "$PGDATA" 2>/dev/null || true

# The socket's folder is a volume in the manifests; where it is not writable
# (a volume the engine gave to root), the socket goes to /tmp instead, so that
# only local clients in this container need to know (PGHOST below).
socket_dir=/var/run/postgresql
if [ ! -w "$socket_dir" ]; then
    say "$socket_dir is not writable by uid $(id -u); the socket goes to /tmp"
    socket_dir=/tmp
    set -- "$@" -c unix_socket_directories=/tmp
fi
export PGHOST=$socket_dir

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        say "PGDATA is empty and POSTGRES_PASSWORD is not set: set it (from a Secret), or"
        say "POSTGRES_HOST_AUTH_METHOD=trust to allow connections without a password (unsafe)"
        exit 1
    fi
    say "initialising a new cluster in $PGDATA for user $POSTGRES_USER"
    # The password reaches initdb through a pipe, never a file or an argument.
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words on purpose
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
        $POSTGRES_INITDB_ARGS > /tmp/initdb.log 2>&1 || { cat /tmp/initdb.log >&2; exit 1; }
    {
        echo "listen_addresses = '*'"
        echo "password_encryption = scram-sha-256"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

    # A server on the socket only, for the set-up: nothing can connect over
    # the network (nor pass the readiness probe) until it is done.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$socket_dir -p 5432" -w -t 60 start > /tmp/pg_ctl.log 2>&1 \
        || { cat /tmp/pg_ctl.log >&2; exit 1; }
    psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --quiet)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql) say "running $script"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$script" ;;
            *.sh) say "running $script"; . "$script" ;;
            *) [ -e "$script" ] && say "ignoring $script" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w -t 60 stop > /tmp/pg_ctl.log 2>&1 \
        || { cat /tmp/pg_ctl.log >&2; exit 1; }
    say "initialised; database $POSTGRES_DB is ready for start-up"
fi

unset POSTGRES_PASSWORD
exec "$@"
