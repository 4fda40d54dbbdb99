#!/usr/bin/env bash
# Runs every benchmark, side by side, against a throwaway PostgreSQL it starts and stops itself.
#
#   scripts/bench.sh           # about 9 minutes once built
#   scripts/bench.sh --quick   # about 2.5 minutes once built
#
# It builds what it runs first (release): Benchmarks/ and the `lifeguard` CLI. A first, cold
# build of both takes about 20 minutes on a 2-core machine; later runs rebuild nothing. The
# build and the run are timed apart. Figures go to standard output as Markdown, ready for
# BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=""
case "${1:-}" in
    "") ;;
    --quick) quick="--quick" ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

seconds() { date +%s; }

built_at=$(seconds)
echo "## Building (release)"
swift build -c release --package-path Benchmarks 2>&1 | tail -1
swift build -c release --product lifeguard 2>&1 | tail -1
echo "build: $(( $(seconds) - built_at )) s"

export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/bench-$$"
trap 'scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
DATABASE_URL="$(scripts/postgres.sh start)"
export DATABASE_URL

started_at=$(seconds)
section() { echo; echo "## $1 ($(( $(seconds) - started_at )) s in)"; echo; }

section "Machine"
echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(swift --version 2>&1 | head -1)"
echo "PostgreSQL: $(scripts/postgres.sh url | sed 's/:[^:@]*@/:…@/')"

section "Pool overhead, no database: lease-benchmark $quick"
Benchmarks/.build/release/lease-benchmark $quick

section "Instructions per cycle (uncontended; 64 tasks on 8, body suspends once): scripts/instructions.sh $quick"
if command -v qemu-x86_64 >/dev/null || [[ "$(id -u)" == 0 ]]; then
    scripts/instructions.sh $quick
else
    echo "skipped: needs qemu-x86_64 (sudo apt-get install qemu-user)"
fi

section "SELECT 1 through 20 connections: select-benchmark $quick"
Benchmarks/.build/release/select-benchmark $quick

section "The AI scenario: lifeguard bench --scenario seed"
if [[ -n "$quick" ]]; then seed_seconds=15; else seed_seconds=60; fi
.build/release/lifeguard bench --scenario seed --duration "$seed_seconds" --database-url "$DATABASE_URL"

section "Overload: overload-benchmark $quick"
Benchmarks/.build/release/overload-benchmark $quick

section "Agent writes: agent-storm-benchmark --burst"
Benchmarks/.build/release/agent-storm-benchmark --burst

section "Done"
echo "run: $(( $(seconds) - started_at )) s"
