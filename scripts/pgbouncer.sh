#!/usr/bin/env bash
# A throwaway PgBouncer in transaction mode in front of the throwaway PostgreSQL
# (scripts/postgres.sh), on a free loopback port.
#
#   scripts/pgbouncer.sh start       writes its configuration and starts it; prints its DATABASE_URL
#   scripts/pgbouncer.sh url [wide]  prints the URL again; `wide`: the same server through a pool of
#                                    60 server connections (database lifeguard_wide), which the
#                                    whole Postgres test suite runs through
#   scripts/pgbouncer.sh stop        stops it and deletes its folder
#
# Installs Debian's `pgbouncer` package when it is missing. Like PostgreSQL, PgBouncer refuses to
# run as root, so as root it runs as the `postgres` user. Its state is recorded next to the
# PostgreSQL cluster's ($LIFEGUARD_POSTGRES_STATE-pgbouncer). The server pool is small
# (PGBOUNCER_POOL_SIZE, default 2), so that clients share server connections as they do in
# production; the wide database's holds 60, so that every test's budget fits behind it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state_file="${LIFEGUARD_POSTGRES_STATE:-$repo/.build-postgres/current}-pgbouncer"
user="lifeguard"
password="lifeguard-test-password"
database="lifeguard"

log() { echo "pgbouncer.sh: $*" >&2; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ensure_installed() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] && return 0
    [ "$(id -u)" -eq 0 ] || { log "pgbouncer not found; install it (Debian: apt-get install pgbouncer)"; exit 1; }
    log "installing Debian's pgbouncer package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq pgbouncer >&2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

case "${1:-}" in
start)
    ensure_installed
    server_url="$("$repo/scripts/postgres.sh" url)"
    server_port="$(echo "$server_url" | sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#')"
    [ -f "$state_file" ] && "$0" stop
    dir="$(mktemp -d "${TMPDIR:-/tmp}/lifeguard-pgbouncer.XXXXXX")"
    port="$(free_port)"
    printf '"%s" "%s"\n' "$user" "$password" > "$dir/userlist.txt"
    # TLS on both sides when the server has a certificate (scripts/postgres.sh makes one when
    # openssl is there): clients choose with sslmode, as they do with the server itself.
    tls=""
    server_data="$(sed -n 's/^dir=//p' "${LIFEGUARD_POSTGRES_STATE:-$repo/.build-postgres/current}")/data"
    if [ -f "$server_data/server.crt" ]; then
        tls="client_tls_sslmode = allow
client_tls_key_file = $server_data/server.key
client_tls_cert_file = $server_data/server.crt
server_tls_sslmode = prefer"
    fi
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
$database = host=127.0.0.1 port=$server_port dbname=$database
${database}_wide = host=127.0.0.1 port=$server_port dbname=$database pool_size=60
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL_SIZE:-2}
max_client_conn = 200
query_wait_timeout = 120
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
$tls
pidfile = $dir/pgbouncer.pid
INI
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi
    as_owner /usr/sbin/pgbouncer -d "$dir/pgbouncer.ini" >&2 || { log "pgbouncer failed to start:"; cat "$dir/pgbouncer.log" >&2; exit 1; }
    for _ in $(seq 1 50); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
    printf 'dir=%q\nport=%q\n' "$dir" "$port" > "$state_file"
    log "PgBouncer $(/usr/sbin/pgbouncer --version | head -1 | awk '{print $2}') on 127.0.0.1:$port, transaction mode, in front of 127.0.0.1:$server_port"
    "$0" url
    ;;
url)
    [ -f "$state_file" ] || { log "not running (no $state_file)"; exit 1; }
    # shellcheck disable=SC1090
    source "$state_file"
    case "${2:-}" in
    "") echo "postgres://$user:$password@127.0.0.1:$port/$database?sslmode=disable" ;;
    wide) echo "postgres://$user:$password@127.0.0.1:$port/${database}_wide?sslmode=disable" ;;
    *) log "unknown database '${2}': url takes nothing or 'wide'"; exit 2 ;;
    esac
    ;;
stop)
    [ -f "$state_file" ] || exit 0
    # shellcheck disable=SC1090
    source "$state_file"
    if [ -f "$dir/pgbouncer.pid" ]; then kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true; fi
    sleep 0.2
    rm -rf "$dir" "$state_file"
    ;;
*)
    echo "usage: $0 start|url [wide]|stop" >&2
    exit 2
    ;;
esac
