#!/usr/bin/env bash
# The test entry point: starts a throwaway PostgreSQL, runs `swift test` against it, and stops
# the server on every exit path. Extra arguments go to `swift test` (e.g. --filter Postgres).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/test-$$"
trap 'scripts/postgres.sh stop' EXIT
trap 'exit 130' INT TERM
DATABASE_URL="$(scripts/postgres.sh start)"
export DATABASE_URL
export LIFEGUARD_POSTGRES_SCRIPT="$PWD/scripts/postgres.sh"
swift test "$@"
