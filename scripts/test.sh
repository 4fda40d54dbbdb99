#!/usr/bin/env bash
# The test entry point: starts a throwaway PostgreSQL and a PgBouncer in front of it, runs
# `swift test` against them (after scripts/docs-check.sh and scripts/dashboard-test.sh, the
# live dashboard in headless Chromium), and stops both on every exit path. Extra arguments go
# to `swift test` (e.g. --filter Postgres).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/test-$$"
trap 'scripts/pgbouncer.sh stop; scripts/postgres.sh stop' EXIT
trap 'exit 130' INT TERM
DATABASE_URL="$(scripts/postgres.sh start)"
export DATABASE_URL
# PgBouncer (transaction mode) in front of it, for the tests of the same promises behind it.
PGBOUNCER_URL="$(scripts/pgbouncer.sh start)"
export PGBOUNCER_URL
export LIFEGUARD_POSTGRES_SCRIPT="$PWD/scripts/postgres.sh"
# Python with psycopg (from PyPI, in a virtual environment of its own), for the tests of
# `lifeguard doctor` on a stack that is not ours.
if [[ ! -x .build-python/bin/python ]] || ! .build-python/bin/python -c 'import psycopg' 2>/dev/null; then
    python3 -m venv .build-python && .build-python/bin/pip install --quiet 'psycopg[binary]' \
        || echo "scripts/test.sh: could not install psycopg from PyPI; doctor's Python clients are not tried" >&2
fi
if .build-python/bin/python -c 'import psycopg' 2>/dev/null; then
    export LIFEGUARD_PYTHON="$PWD/.build-python/bin/python"
fi
# The documentation first: every DocC link resolves, every public parameter is documented.
swift build 2>&1 | tail -1
scripts/docs-check.sh
# The example service's dashboard in a real browser (installs Debian's chromium if missing).
scripts/dashboard-test.sh
# Line-buffered, so that what a hung test printed last is seen; and bounded, so that a hang fails
# the run in time instead of using up CI's 90 minutes (each suite of real I/O also has a 3-minute
# limit per test, which names the test that hung).
bounded_swift_test() {
    local status=0
    timeout --signal=TERM --kill-after=30s "${LIFEGUARD_TEST_TIMEOUT:-40m}" stdbuf -oL -eL swift test "$@" || status=$?
    if (( status == 124 || status == 137 )); then
        echo "scripts/test.sh: swift test did not finish within ${LIFEGUARD_TEST_TIMEOUT:-40m}: a test hung (its 'started' line above has no end)" >&2
    fi
    return "$status"
}
status=0
bounded_swift_test "$@" || status=$?
# The whole Postgres suite again, its pools behind PgBouncer in transaction mode (60 server
# connections); the observer still watches the server directly. Tests of servers of their own
# and of the two-connection PgBouncer above do not run twice. Skipped when arguments choose tests.
if (( $# == 0 )); then
    echo "scripts/test.sh: the Postgres suite behind PgBouncer (LIFEGUARD_TEST_POOL_URL)"
    LIFEGUARD_TEST_POOL_URL="$(scripts/pgbouncer.sh url wide)" bounded_swift_test --skip-build --filter LifeguardPostgresTests || status=$?
fi
exit "$status"
