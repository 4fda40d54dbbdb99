#!/usr/bin/env bash
# Issue 22's benchmark: reads through the primary only against a primary and a streaming
# standby, at the same budget per host, one run. It starts its own primary and standby
# (scripts/postgres.sh, scripts/standby.sh) and drives, with `lifeguard bench`, over one URL
# listing both (target_session_attrs=read-write):
#   - lifeguard: one PostgresPool, every lease on the primary;
#   - lifeguard-cluster: a PostgresCluster, reads on the standby (spilling onto the primary
#     when the standby's lane is full), writes on the primary;
#   - postgresclient: PostgresNIO's PostgresClient on the primary, the plain pool.
# Rows: open loop `retrieval-burst` (8 parallel 15 ms reads) at 1×, 1.5× and 2× one host's
# capacity, and closed loop `rag` (a write, 8–12 reads, a model call, a write) at 40 and 80
# users. Which server served the run is each server's own count of the transactions it
# committed (pg_stat_database.xact_commit), not the pool's.
#
#   scripts/cluster-bench.sh [--lifeguard PATH] [--duration SECONDS] [--budget N]   # about 8 minutes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lifeguard=.build/release/lifeguard
duration=20
budget=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --lifeguard) lifeguard="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        *) echo "usage: scripts/cluster-bench.sh [--lifeguard PATH] [--duration SECONDS] [--budget N]" >&2; exit 2 ;;
    esac
done
if [[ ! -x "$lifeguard" ]]; then
    swift build -c release --product lifeguard 2>&1 | tail -1
fi
export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/cluster-bench-$$"
trap 'scripts/standby.sh stop >/dev/null 2>&1 || true; scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
primary=$(scripts/postgres.sh start 2>/dev/null)
standby=$(scripts/standby.sh start 2>/dev/null)
port() { sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#' <<<"$1"; }
url="postgres://lifeguard:lifeguard-test-password@127.0.0.1:$(port "$primary"),127.0.0.1:$(port "$standby")/lifeguard?sslmode=disable&target_session_attrs=read-write"

results=$(mktemp)
run() {
    # run LABEL ARGS…: one `bench --json` of the three pools, each line tagged with LABEL.
    local label="$1"; shift
    local output errors
    errors=$(mktemp)
    if output=$("$lifeguard" bench --json --database-url "$url" --budget "$budget" --duration "$duration" \
        --pool lifeguard,lifeguard-cluster,postgresclient "$@" 2>"$errors"); then
        sed "s/^/$label\t/" <<<"$output" >> "$results"
    else
        echo "  $label: bench failed (exit $?): $(tr '\r' '\n' < "$errors" | grep -v '^bench ' | grep -v '^\s*$' | tail -3)" >&2
    fi
    rm -f "$errors"
}

# One host's capacity for retrieval-burst: budget connections ÷ 8 reads × 15 ms.
capacity=$(python3 -c "print($budget / 8 / 0.015)")
echo "budget $budget per host; one host serves $capacity retrieval-burst requests/s; ${duration} s per pool" >&2
for load in 1 1.5 2; do
    echo "  open loop, ${load}× one host" >&2
    rate=$(python3 -c "print(round($load * $capacity / 60, 4))")  # the scenario's own rate is 60/s
    run "open loop, ${load}× one host" --scenario retrieval-burst --rate "$rate"
done
for users in 40 80; do
    echo "  closed loop, rag, $users users" >&2
    run "closed loop, rag, $users users" --scenario rag --users "$users"
done

python3 - "$results" <<'PY'
import json, sys
names = {"lifeguard": "Lifeguard, primary only", "lifeguard-cluster": "Lifeguard cluster, primary + standby",
         "postgresclient": "`PostgresClient`, primary only"}
print("| load | pool | goodput/s | reads/s | rejected | admitted wait p50 / p99 (ms) | e2e p50 / p99 (ms) | transactions on the standby | goodput ÷ primary only |")
print("|---|---|---|---|---|---|---|---|---|")
rows = {}
order = []
for line in open(sys.argv[1]):
    label, payload = line.rstrip("\n").split("\t", 1)
    rows.setdefault(label, []).append(json.loads(payload))
    if label not in order:
        order.append(label)
for label in order:
    base = next((r["throughput_per_s"] for r in rows[label] if r["pool"] == "lifeguard"), None)
    for r in rows[label]:
        failed = sum(r["failed_requests"].values())
        attempts = failed + r["completed"] + r["cancelled_requests"]
        waits = r["wait_ms"].values()
        p50 = max((w["p50"] for w in waits), default=0)
        p99 = max((w["p99"] for w in waits), default=0)
        committed = r.get("committed_by_server") or {}
        total = sum(committed.values())
        standby = sum(v for k, v in committed.items() if k.endswith("standby"))
        # retrieval-burst: 8 reads a request; rag: 8 to 12, 10 on average.
        reads = r["throughput_per_s"] * (8 if r["scenario"] == "retrieval-burst" else 10)
        ratio = f"{r['throughput_per_s'] / base:.2f}×" if base else "—"
        print(f"| {label} | {names[r['pool']]} | {r['throughput_per_s']:.1f} | {reads:,.0f} | {100 * failed / max(1, attempts):.1f}% | "
              f"{p50:.1f} / {p99:.1f} | {r['e2e_ms']['p50']:.0f} / {r['e2e_ms']['p99']:.0f} | "
              f"{100 * standby / max(1, total):.0f}% of {total:,} | {ratio} |")
PY
rm -f "$results"
