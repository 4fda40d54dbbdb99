#!/usr/bin/env bash
# The live dashboard in a real browser: starts Examples/rag-service (the debug build) against
# DATABASE_URL, puts it under load, loads /pool in Debian's headless Chromium (installs it if
# missing) and checks what the page shows against /pool/statistics, under load and after it;
# saves a screenshot to .build-dashboard/dashboard.png. Exit 1 on any mismatch.
#
#   DATABASE_URL=... scripts/dashboard-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${DATABASE_URL:?set DATABASE_URL (scripts/postgres.sh start prints one)}"
if ! command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
out="$PWD/.build-dashboard"
mkdir -p "$out"
binary="$(swift build --show-bin-path)/rag-service"
[[ -x "$binary" ]] || swift build --product rag-service 2>&1 | tail -1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

"$binary" --port "$port" --budget 8 --model-milliseconds 200 >"$out/rag-service.log" 2>&1 &
app=$!
load=""
cleanup() {
    [[ -n "$load" ]] && kill "$load" 2>/dev/null || true
    kill -TERM "$app" 2>/dev/null || true
    wait "$app" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$app" 2>/dev/null || { cat "$out/rag-service.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$base/health" >/dev/null || { echo "rag-service did not become ready" >&2; cat "$out/rag-service.log" >&2; exit 1; }

# Load: 24 clients in a loop, searches and answers, enough to queue on 8 connections.
python3 - "$base" >"$out/load.log" 2>&1 <<'PY' &
import sys, threading, urllib.request, urllib.error, random
base = sys.argv[1]
def client(n):
    while True:
        try:
            if random.random() < 0.8:
                urllib.request.urlopen(f"{base}/search?q=q{random.randrange(10**6)}", timeout=30).read()
            else:
                urllib.request.urlopen(urllib.request.Request(f"{base}/answer?q=q{random.randrange(10**6)}", method="POST"), timeout=30).read()
        except urllib.error.HTTPError:
            pass
        except Exception:
            pass
threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(24)]
for t in threads: t.start()
for t in threads: t.join()
PY
load=$!
sleep 4

chrome() {
    chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
        --virtual-time-budget=3500 "$@" 2>/dev/null
}
chrome --dump-dom "$base/pool" >"$out/under-load.html"
curl -sf "$base/pool/statistics" >"$out/under-load.json"
chrome --window-size=1400,1150 --screenshot="$out/dashboard.png" "$base/pool" >/dev/null
kill "$load"; load=""
sleep 3
chrome --dump-dom "$base/pool" >"$out/after-load.html"
curl -sf "$base/pool/statistics" >"$out/after-load.json"

python3 - "$out" <<'PY'
import html.parser, json, re, sys
out = sys.argv[1]

class Figures(html.parser.HTMLParser):
    """The text of every element with an id."""
    def __init__(self):
        super().__init__()
        self.stack, self.text = [], {}
    def handle_starttag(self, tag, attrs):
        self.stack.append(dict(attrs).get("id"))
    def handle_endtag(self, tag):
        if self.stack: self.stack.pop()
    def handle_data(self, data):
        for name in self.stack:
            if name: self.text[name] = self.text.get(name, "") + data

def page(name):
    parser = Figures()
    parser.feed(open(f"{out}/{name}.html").read())
    return parser.text

def number(text):
    match = re.search(r"-?[\d.]+", text.replace(",", ""))
    if not match: raise ValueError(f"no number in {text!r}")
    value = float(match.group())
    return value * 1000 if text.strip().endswith(" s") and "ms" not in text else value

problems = []
def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what)
    if not condition: problems.append(what)

under, after = page("under-load"), page("after-load")
stats_under = json.load(open(f"{out}/under-load.json"))
stats_after = json.load(open(f"{out}/after-load.json"))
lanes = {lane["lane"]: lane for lane in stats_under["lanes"]}

check(under.get("state", "") not in ("", "connecting…") and not under.get("state", "").startswith("no data"),
      f"the page drew a snapshot (state: {under.get('state')!r})")
for lane in ("retrieval", "write"):
    granted_page = number(under.get(f"granted-{lane}", "nan"))
    granted_stats = lanes[lane]["outcomes"]["granted"]
    check(granted_stats > 0 and 0.5 * granted_stats <= granted_page <= granted_stats,
          f"{lane}: granted on the page {granted_page:.0f}, /pool/statistics just after {granted_stats}")
    p99_page = number(under.get(f"wait-p99-{lane}", "nan"))
    p99_stats = lanes[lane]["wait"]["p99"]
    check(abs(p99_page - p99_stats) <= max(5.0, 0.5 * p99_stats),
          f"{lane}: wait p99 on the page {p99_page} ms, /pool/statistics {p99_stats} ms")
utilization_page = number(under.get("utilization-p99", "nan"))
check(abs(utilization_page - 100 * stats_under["utilizationP99"]) <= 15,
      f"utilization p99 on the page {utilization_page}%, /pool/statistics {100 * stats_under['utilizationP99']:.0f}%")
check(under.get("connections-leased", "").endswith("/ 8"), f"connections leased of the budget of 8: {under.get('connections-leased')!r}")
check(number(under.get("connections-leased", "0")) >= 1, "under load, connections are leased")
# As the load changes, so does the page.
check(number(after.get("granted-retrieval", "0")) > number(under.get("granted-retrieval", "0")),
      f"granted grew between the two loads of the page ({under.get('granted-retrieval')} -> {after.get('granted-retrieval')})")
check(number(after.get("waiters", "1")) == 0 and number(after.get("connections-leased", "1")) == 0,
      f"after the load: nothing waiting ({after.get('waiters')!r}), nothing leased ({after.get('connections-leased')!r})")
check(after.get("state") == "healthy" or "slow waits" in after.get("state", ""), f"state after the load: {after.get('state')!r}")
# The database is up all along: no lane says otherwise.
for lane in ("retrieval", "write"):
    check(under.get(f"state-{lane}") in ("ok", "overloaded") and after.get(f"state-{lane}") == "ok",
          f"{lane}'s state under load {under.get(f'state-{lane}')!r}, after {after.get(f'state-{lane}')!r}")
if problems:
    print(f"dashboard-test: {len(problems)} problems", file=sys.stderr)
    sys.exit(1)
print(f"dashboard-test: the page matches /pool/statistics under load and after; screenshot {out}/dashboard.png")
PY
