#!/usr/bin/env bash
# A throwaway streaming standby of the throwaway PostgreSQL (scripts/postgres.sh), on a free
# loopback port: `pg_basebackup -R -X stream` from the primary, then started as a hot standby.
#
#   scripts/standby.sh start     base backup + start; prints the standby's DATABASE_URL
#   scripts/standby.sh url       prints the DATABASE_URL of the running standby
#   scripts/standby.sh stop      stops the standby and deletes its folder
#   scripts/standby.sh pause     stops the standby but keeps it (an unreachable replica)
#   scripts/standby.sh resume    starts a paused standby again on the same port
#   scripts/standby.sh crash     kills the standby at once (`pg_ctl stop -m immediate`)
#   scripts/standby.sh promote   promotes the standby (`pg_ctl promote -w`): it becomes a
#                                primary; stop the old primary first to fail over
#
# Uses the primary recorded in $LIFEGUARD_POSTGRES_STATE (as scripts/postgres.sh does); the
# standby's own state is recorded next to it ($LIFEGUARD_POSTGRES_STATE-standby). Like the
# primary, it runs as the `postgres` user when we are root, without fsync (a test cluster).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
primary_state="${LIFEGUARD_POSTGRES_STATE:-$repo/.build-postgres/current}"
state_file="$primary_state-standby"
user="lifeguard"
password="lifeguard-test-password"
database="lifeguard"

log() { echo "standby.sh: $*" >&2; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

read_state() {
    [ -f "$state_file" ] || { log "no standby recorded in $state_file; run 'start' first"; exit 1; }
    # shellcheck disable=SC1090
    source "$state_file"
}

url() {
    echo "postgres://$user:$password@127.0.0.1:$port/$database?sslmode=disable"
}

start_server() {
    local tls=""
    [ -f "$dir/data/server.crt" ] && tls="-c ssl=on -c ssl_cert_file=$dir/data/server.crt -c ssl_key_file=$dir/data/server.key"
    # A short wal_receiver_status_interval, so that the primary's view of the standby's replay
    # (pg_stat_replication) is fresh; hot_standby_feedback off, as by default.
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_receiver_status_interval=1 $tls" \
        start >&2 || { log "standby failed to start; its log:"; cat "$dir/server.log" >&2; exit 1; }
}

case "${1:-}" in
start)
    primary_url="$("$repo/scripts/postgres.sh" url)"
    primary_port="$(echo "$primary_url" | sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#')"
    # shellcheck disable=SC1090
    bindir="$(source "$primary_state"; echo "$bindir")"
    [ -f "$state_file" ] && "$0" stop
    dir="$(mktemp -d "${TMPDIR:-/tmp}/lifeguard-standby.XXXXXX")"
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    # -R writes primary_conninfo and standby.signal; -X stream copies the WAL made meanwhile.
    as_owner env PGPASSWORD="$password" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U "$user" \
        -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 \
        || { log "pg_basebackup failed:"; cat "$dir/basebackup.log" >&2; exit 1; }
    port="$(free_port)"
    start_server
    printf 'dir=%q\nport=%q\nbindir=%q\n' "$dir" "$port" "$bindir" > "$state_file"
    log "PostgreSQL standby on 127.0.0.1:$port, streaming from 127.0.0.1:$primary_port ($dir)"
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
promote)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w promote >&2
    ;;
stop)
    if [ ! -f "$state_file" ]; then exit 0; fi
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$state_file"
    ;;
*)
    echo "usage: $0 start|url|stop|pause|resume|crash|promote" >&2
    exit 2
    ;;
esac
