#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, on a free loopback port.
#
#   scripts/postgres.sh start    initdb + start in a temp folder; prints the DATABASE_URL
#   scripts/postgres.sh url      prints the DATABASE_URL of the running cluster
#   scripts/postgres.sh stop     stops the cluster and deletes its folder
#   scripts/postgres.sh pause    stops the server but keeps the cluster (to test outages)
#   scripts/postgres.sh resume   starts a paused server again on the same port
#   scripts/postgres.sh crash    kills the server at once (`pg_ctl stop -m immediate`): what a
#                                power cut leaves, less the operating system's cache; `resume`
#                                then runs crash recovery
#
# Installs Debian's `postgresql` package when initdb is missing. PostgreSQL refuses to run as
# root, so as root the server runs as the `postgres` user. The cluster's folder is recorded in
# .build-postgres/current (or $LIFEGUARD_POSTGRES_STATE) so that the other commands find it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state_file="${LIFEGUARD_POSTGRES_STATE:-$repo/.build-postgres/current}"
user="lifeguard"
password="lifeguard-test-password"
database="lifeguard"

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local candidate
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/initdb" ]; then echo "$candidate"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return 0; fi
    return 1
}

ensure_installed() {
    if find_bindir >/dev/null; then return 0; fi
    if [ "$(id -u)" -ne 0 ]; then
        log "initdb not found; install PostgreSQL (Debian: apt-get install postgresql) or run as root"
        exit 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    # The package may start its own cluster; we use ours, on another port.
    find_bindir >/dev/null || { log "initdb still missing after installing postgresql"; exit 1; }
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

read_state() {
    [ -f "$state_file" ] || { log "no cluster recorded in $state_file; run 'start' first"; exit 1; }
    # shellcheck disable=SC1090
    source "$state_file"
}

url() {
    echo "postgres://$user:$password@127.0.0.1:$port/$database?sslmode=disable"
}

start_server() {
    # Throwaway clusters skip durability for speed; LIFEGUARD_POSTGRES_DURABLE=1 keeps it (for
    # benchmarks where a commit's flush matters, e.g. group commit).
    local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    # (recorded with the cluster, so that `resume` keeps it).
    [ "${durable:-0}" = 1 ] && durability=""
    # TLS with a throwaway self-signed certificate, when openssl is there: clients choose with
    # sslmode (the URL printed says disable; tests of the TLS path ask for require).
    local tls=""
    [ -f "$dir/data/server.crt" ] && tls="-c ssl=on -c ssl_cert_file=$dir/data/server.crt -c ssl_key_file=$dir/data/server.key"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 $durability $tls" \
        start >&2 || { log "server failed to start; its log:"; cat "$dir/server.log" >&2; exit 1; }
}

case "${1:-}" in
start)
    ensure_installed
    bindir="$(find_bindir)"
    if [ -f "$state_file" ]; then
        log "a cluster is already recorded in $state_file; stopping it first"
        "$0" stop || true
    fi
    dir="$(mktemp -d "${TMPDIR:-/tmp}/lifeguard-postgres.XXXXXX")"
    chmod 755 "$dir"
    printf '%s\n' "$password" > "$dir/password"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi
    as_owner "$bindir/initdb" -D "$dir/data" -U "$user" --pwfile="$dir/password" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
        || { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    if command -v openssl >/dev/null 2>&1; then
        openssl req -new -x509 -days 7 -nodes -subj "/CN=localhost" \
            -keyout "$dir/data/server.key" -out "$dir/data/server.crt" >/dev/null 2>&1 || true
        if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/data/server.key" "$dir/data/server.crt" 2>/dev/null || true; fi
        chmod 600 "$dir/data/server.key" 2>/dev/null || true
    fi
    port="$(free_port)"
    durable="${LIFEGUARD_POSTGRES_DURABLE:-0}"
    start_server
    as_owner "$bindir/psql" -h "$dir" -p "$port" -U "$user" -d postgres -qAt \
        -c "CREATE DATABASE $database" >&2
    mkdir -p "$(dirname "$state_file")"
    printf 'dir=%q\nport=%q\nbindir=%q\ndurable=%q\n' "$dir" "$port" "$bindir" "$durable" > "$state_file"
    log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
    url
    ;;
url)
    read_state
    url
    ;;
pause)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    ;;
resume)
    read_state
    start_server
    ;;
crash)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >&2
    ;;
stop)
    if [ ! -f "$state_file" ]; then exit 0; fi
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$state_file"
    ;;
*)
    echo "usage: $0 start|url|stop|pause|resume|crash" >&2
    exit 2
    ;;
esac
