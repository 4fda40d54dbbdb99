#!/usr/bin/env bash
# Issue 19's benchmark: Lifeguard and PostgresClient side by side, same budget (20), one run,
# against a real PostgreSQL (DATABASE_URL, or a throwaway one it starts itself):
#   - closed loop, the `rag` scenario (a log write, 8–12 parallel 15 ms reads through fanOut, a
#     model call of median 0.3 s, a persist): 10, 20, 40 and 80 users, written with three
#     short windows and naively (a transaction held across the model call);
#   - open loop, `retrieval-burst` (8 parallel 15 ms reads) at 0.5×, 0.9×, 1.1×, 1.5× and 3× the
#     lane's capacity (20 connections ÷ 8 × 15 ms = 166.7 requests/s).
# Prints a Markdown table per part: goodput, request attempts rejected, admitted wait p50/p99
# (the worst lane), end-to-end p50/p99, and Lifeguard's goodput and p99 wait as ratios.
#
#   scripts/admission-bench.sh [--lifeguard PATH] [--duration SECONDS]   # about 25 minutes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lifeguard=.build/release/lifeguard
duration=30
while [[ $# -gt 0 ]]; do
    case "$1" in
        --lifeguard) lifeguard="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        *) echo "usage: scripts/admission-bench.sh [--lifeguard PATH] [--duration SECONDS]" >&2; exit 2 ;;
    esac
done
if [[ ! -x "$lifeguard" ]]; then
    swift build -c release --product lifeguard 2>&1 | tail -1
fi
if [[ -z "${DATABASE_URL:-}" ]]; then
    export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/admission-$$"
    trap 'scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
    DATABASE_URL="$(scripts/postgres.sh start)"
    export DATABASE_URL
fi

results=$(mktemp)
run() {
    # run LABEL ARGS…: one `bench --json` of both pools, each line tagged with LABEL. A row that
    # fails says why (bench's own message) and the table is still printed without it.
    local label="$1"; shift
    local output errors
    errors=$(mktemp)
    if output=$("$lifeguard" bench --json --duration "$duration" "$@" 2>"$errors"); then
        sed "s/^/$label\t/" <<<"$output" >> "$results"
    else
        echo "  $label: bench failed (exit $?): $(tr '\r' '\n' < "$errors" | grep -v '^bench ' | grep -v '^\s*$' | tail -3)" >&2
    fi
    rm -f "$errors"
}

echo "closed loop: rag, budget 20, ${duration} s per pool" >&2
for design in windows naive; do
    for users in 10 20 40 80; do
        echo "  $design, $users users" >&2
        run "closed	$design	$users users" --scenario rag --design "$design" --users "$users"
    done
done
echo "open loop: retrieval-burst, budget 20, ${duration} s per pool" >&2
for load in 0.5 0.9 1.1 1.5 3; do
    echo "  ${load}× capacity" >&2
    # The scenario's 60 requests/s is 0.36× the capacity of 166.7/s.
    rate=$(python3 -c "print(round($load * 166.7 / 60, 4))")
    run "open	windows	${load}× capacity" --scenario retrieval-burst --rate "$rate"
done

python3 - "$results" <<'EOF'
import json, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    loop, design, load, payload = line.rstrip("\n").split("\t", 3)
    result = json.loads(payload)
    key = (loop, design, load)
    if key not in rows:
        rows[key] = []
        order.append(key)
    rows[key].append(result)

def describe(result):
    failed = sum(result["failed_requests"].values())
    attempts = failed + result["completed"] + result["cancelled_requests"]
    waits = result["wait_ms"].values()
    p50 = max((w["p50"] for w in waits), default=0)
    p99 = max((w["p99"] for w in waits), default=0)
    return {
        "goodput": result["throughput_per_s"], "rejected": 100 * failed / max(1, attempts),
        "p50": p50, "p99": p99,
        "e2e50": result["e2e_ms"]["p50"] if result["completed"] else None,
        "e2e99": result["e2e_ms"]["p99"] if result["completed"] else None,
        "failed": ", ".join(f"{k} {v}" for k, v in sorted(result["failed_requests"].items())) or "none",
    }

def figure(value):
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

for loop in ("closed", "open"):
    print()
    print(f"| {'design, users' if loop == 'closed' else 'load'} | pool | goodput/s | rejected | admitted wait p50 / p99 (ms) | e2e p50 / p99 (ms) | failed requests | Lifeguard ÷ PostgresClient: goodput, wait p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for key in order:
        if key[0] != loop:
            continue
        pools = [describe(r) for r in rows[key]]
        for index, (name, figures) in enumerate(zip(("Lifeguard", "`PostgresClient`"), pools)):
            ratio = ""
            if index == 0 and len(pools) == 2:
                other = pools[1]
                # Against a pool that completed nothing (a deadlock), a ratio says nothing.
                if other["goodput"] > 0 and other["p99"] > 0:
                    ratio = f"{figures['goodput'] / other['goodput']:.2f}×, {figures['p99'] / other['p99']:.2f}×"
                else:
                    ratio = "— (`PostgresClient` served none)"
            label = f"{key[1]}, {key[2]}" if loop == "closed" else key[2]
            print(f"| {label} | {name} | {figure(figures['goodput'])} | {figures['rejected']:.1f}% | "
                  f"{figure(figures['p50'])} / {figure(figures['p99'])} | {figure(figures['e2e50'])} / {figure(figures['e2e99'])} | "
                  f"{figures['failed']} | {ratio} |")
EOF
rm -f "$results"
