#!/usr/bin/env bash
# The rag-service under load: the same app on Lifeguard and on PostgresClient (same budget),
# both running, wrk at 2, 20 and 80 concurrent clients against each in turn, round by round
# (the machine's speed drifts: interleaving keeps the comparison fair), against a throwaway
# PostgreSQL (or DATABASE_URL). Prints a Markdown table of the median round: requests/s served
# (2xx), non-2xx %, p50/p99, and the spread of requests/s over the rounds.
#
#   Examples/rag-service/load/run.sh [--duration SECONDS] [--rounds N] [--mix search|answer|all] [--clients "2 20 80"] [--budget N]
#
# --budget sets both apps' connections (default 20); a small one with many clients is a storm
# of rejections (issue 19: budget 4, 200 clients).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

duration=10
rounds=3
mix=all
clients="2 20 80"
budget=20
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --mix) mix="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        *) echo "usage: Examples/rag-service/load/run.sh [--duration SECONDS] [--rounds N] [--mix search|answer|all] [--clients \"2 20 80\"] [--budget N]" >&2; exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
swift build -c release --product rag-service 2>&1 | tail -1 >&2
binary="$(swift build -c release --show-bin-path)/rag-service"

started_postgres=""
if [[ -z "${DATABASE_URL:-}" ]]; then
    export LIFEGUARD_POSTGRES_STATE="$PWD/.build-postgres/rag-load-$$"
    started_postgres=1
    trap 'scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
    DATABASE_URL="$(scripts/postgres.sh start)"
    export DATABASE_URL
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
args=()
[[ "$mix" == all ]] || args=(-- "$mix")
apps=()
stop() {
    kill -TERM "${apps[@]}" 2>/dev/null || true
    wait "${apps[@]}" 2>/dev/null || true
    [[ -z "$started_postgres" ]] || scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap stop EXIT
declare -A ports
for pool in lifeguard postgresclient; do
    ports[$pool]=$(free_port)
    "$binary" --port "${ports[$pool]}" --pool "$pool" --budget "$budget" >"/tmp/rag-service-$pool.log" 2>&1 &
    apps+=($!)
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:${ports[$pool]}/health" >/dev/null && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:${ports[$pool]}/health" >/dev/null || { cat "/tmp/rag-service-$pool.log" >&2; exit 1; }
    # Warm up: open the connections, fill the caches.
    wrk -t2 -c20 -d2s -s Examples/rag-service/load/mix.lua "http://127.0.0.1:${ports[$pool]}" "${args[@]}" >/dev/null
done

results=$(mktemp)
for n in $clients; do
    for round in $(seq 1 "$rounds"); do
        for pool in lifeguard postgresclient; do
            line=$(wrk -t2 -c"$n" -d"${duration}s" --timeout 30s -s Examples/rag-service/load/mix.lua \
                "http://127.0.0.1:${ports[$pool]}" "${args[@]}" | grep '^{')
            echo "$pool $n $line" >> "$results"
        done
    done
done
python3 - "$results" <<'PY'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    pool, clients, payload = line.split(" ", 2)
    figures = json.loads(payload)
    figures["served"] = (figures["requests"] - figures["non_2xx"]) / figures["seconds"]
    rows.setdefault((int(clients), pool), []).append(figures)
print("| clients | pool | requests/s served (median, min…max) | non-2xx | p50 (ms) | p99 (ms) | Lifeguard ÷ PostgresClient |")
print("|---|---|---|---|---|---|---|")
for clients in sorted({c for c, _ in rows}):
    medians = {}
    for pool in ("lifeguard", "postgresclient"):
        runs = sorted(rows[(clients, pool)], key=lambda f: f["served"])
        median = runs[len(runs) // 2]
        medians[pool] = median["served"]
        requests = sum(f["requests"] for f in runs)
        share = 100 * sum(f["non_2xx"] for f in runs) / max(1, requests)
        errors = sum(f["socket_errors"] for f in runs)
        ratio = ""
        if pool == "postgresclient" and medians["postgresclient"] > 0:
            ratio = f"{medians['lifeguard'] / medians['postgresclient']:.2f}×"
        name = "Lifeguard" if pool == "lifeguard" else "`PostgresClient`"
        print(f"| {clients} | {name} | {median['served']:,.0f} ({runs[0]['served']:,.0f}…{runs[-1]['served']:,.0f}) | "
              f"{share:.1f}%{f' (+{errors} socket errors)' if errors else ''} | {median['p50_ms']:.1f} | {median['p99_ms']:.1f} | {ratio} |")
PY
rm -f "$results"
