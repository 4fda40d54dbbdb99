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
#   scripts/standby.sh rejoin    after a failover (old primary paused or crashed, standby
#                                promoted): the old primary comes back as a standby of the new
#                                one, on its old port (its data replaced by a base backup)
#
# Uses the primary recorded in $LIFEGUARD_POSTGRES_STATE (as scripts/postgres.sh does); the
# standby's own state is recorded next to it ($LIFEGUARD_POSTGRES_STATE-standby), in the
# primary's format, and scripts/postgres.sh starts and stops it as it does the primary.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
primary_state="${LIFEGUARD_POSTGRES_STATE:-$repo/.build-postgres/current}"
state_file="$primary_state-standby"
user="lifeguard"
password="lifeguard-test-password"

log() { echo "standby.sh: $*" >&2; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# The standby is a cluster like the primary, recorded in the same format: scripts/postgres.sh
# runs its url, pause, resume, crash and stop.
cluster() { LIFEGUARD_POSTGRES_STATE="$state_file" "$repo/scripts/postgres.sh" "$@"; }

case "${1:-}" in
start)
    primary_url="$("$repo/scripts/postgres.sh" url)"
    primary_port="$(echo "$primary_url" | sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#')"
    # shellcheck disable=SC1090
    bindir="$(source "$primary_state"; echo "$bindir")"
    [ -f "$state_file" ] && cluster stop
    dir="$(mktemp -d "${TMPDIR:-/tmp}/lifeguard-standby.XXXXXX")"
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    # -R writes primary_conninfo and standby.signal; -X stream copies the WAL made meanwhile.
    as_owner env PGPASSWORD="$password" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U "$user" \
        -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 \
        || { log "pg_basebackup failed:"; cat "$dir/basebackup.log" >&2; exit 1; }
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    printf 'dir=%q\nport=%q\nbindir=%q\ndurable=0\n' "$dir" "$port" "$bindir" > "$state_file"
    cluster resume
    log "PostgreSQL standby on 127.0.0.1:$port, streaming from 127.0.0.1:$primary_port ($dir)"
    cluster url
    ;;
url|pause|resume|crash|stop)
    cluster "$1"
    ;;
promote)
    [ -f "$state_file" ] || { log "no standby recorded in $state_file; run 'start' first"; exit 1; }
    # shellcheck disable=SC1090
    source "$state_file"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w promote >&2
    ;;
rejoin)
    [ -f "$state_file" ] || { log "no standby recorded in $state_file; run 'start' first"; exit 1; }
    new_primary_port="$(source "$state_file"; echo "$port")"
    # shellcheck disable=SC1090
    source "$primary_state"
    # The old primary's server is stopped (pause or crash); its data is replaced, not rewound.
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir/data"
    as_owner env PGPASSWORD="$password" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$new_primary_port" -U "$user" \
        -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 \
        || { log "pg_basebackup failed:"; cat "$dir/basebackup.log" >&2; exit 1; }
    "$repo/scripts/postgres.sh" resume
    log "the old primary on 127.0.0.1:$port is a standby of 127.0.0.1:$new_primary_port"
    ;;
*)
    echo "usage: $0 start|url|stop|pause|resume|crash|promote|rejoin" >&2
    exit 2
    ;;
esac
