#!/usr/bin/env bash
# Instructions per lease+release cycle, counted under qemu-user with a plugin of ours
# (Benchmarks/Tools/instruction_count.c): the floor, Lifeguard without statistics, and Lifeguard
# as it ships, uncontended and with 64 tasks on 8 connections whose body suspends once. Unlike a
# time, the count does not move with the machine's load (the contended count varies by a few
# tenths of a percent with how the two threads interleave).
#
#   scripts/instructions.sh           # 2 runs per pool and row: about 2 minutes
#   scripts/instructions.sh --quick   # 1 run per pool and row, shorter loops: about 30 s
#   scripts/instructions.sh --check   # as the default, then fails (exit 1) on a regression against
#                                     # Benchmarks/Thresholds/instructions.json
#   scripts/instructions.sh --update  # as the default, then writes the counts there as thresholds
#
# Each run counts the whole program twice, with a short and a long loop, and divides the
# difference by the difference in cycles: start-up, warm-up and exit cancel out. What is left
# is the loop, with Lifeguard's background work (its run loop, the metrics export once a second)
# in proportion. It stands in for callgrind, which cannot read Swift 6.3's DWARF 5 in Debian 12's
# valgrind 3.19. Needs qemu-x86_64 (Debian's qemu-user; installed here when run as root) and gcc.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=2 short=1000000 long=3000000 contended_short=100000 contended_long=300000 mode=report
# One option at the most: --check and --update use the full loops, which the thresholds are.
[[ $# -le 1 ]] || { echo "usage: scripts/instructions.sh [--quick | --check | --update]" >&2; exit 2; }
case "${1:-}" in
    "") ;;
    --quick) runs=1 short=200000 long=600000 contended_short=30000 contended_long=90000 ;;
    --check) mode=check ;;
    --update) mode=update ;;
    *) echo "usage: scripts/instructions.sh [--quick | --check | --update]" >&2; exit 2 ;;
esac
thresholds=Benchmarks/Thresholds/instructions.json
counts=.build-instructions/counts.txt

if ! command -v qemu-x86_64 >/dev/null; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "scripts/instructions.sh needs qemu-x86_64: sudo apt-get install qemu-user" >&2
        exit 1
    fi
    echo "installing qemu-user from Debian's packages…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends qemu-user >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user >/dev/null; }
fi

mkdir -p .build-instructions
gcc -shared -fPIC -O2 -Wall -o .build-instructions/libinstruction_count.so Benchmarks/Tools/instruction_count.c
swift build -c release --package-path Benchmarks --product lease-benchmark 2>&1 | tail -1 >&2

# The instructions the whole program executes for a loop of $2 cycles of pool $1, with the
# lease-benchmark options that follow.
count() {
    local pool=$1 cycles=$2
    shift 2
    qemu-x86_64 -plugin .build-instructions/libinstruction_count.so \
        Benchmarks/.build/release/lease-benchmark --only "$pool" "$@" --cycles "$cycles" 2>&1 >/dev/null | sed -n 's/^instructions: //p'
}

# One table: $1 its row's key in the thresholds, $2 its title, $3 and $4 the short and long
# loops, the rest lease-benchmark options. Each pool's mean goes to $counts as well.
table() {
    local row=$1 title=$2 short=$3 long=$4
    shift 4
    echo "### Instructions per cycle, $title (qemu-user, $runs run(s), $short and $long cycles)"
    echo
    echo "| pool | instructions per cycle, each run | × floor |"
    echo "|---|---|---|"
    local floor="" pool figures first ratio a b
    for pool in floor lifeguard-nostats lifeguard; do
        figures=()
        for _ in $(seq "$runs"); do
            a=$(count "$pool" "$short" "$@")
            b=$(count "$pool" "$long" "$@")
            figures+=("$(awk -v a="$a" -v b="$b" -v n=$((long - short)) 'BEGIN { printf "%.1f", (b - a) / n }')")
        done
        first=${figures[0]}
        [[ -z "$floor" ]] && floor=$first
        ratio=$(awk -v x="$first" -v f="$floor" 'BEGIN { printf "%.2f×", x / f }')
        echo "| $pool | $(IFS=/; echo "${figures[*]}" | sed 's#/# / #g') | $ratio |"
        echo "$row $pool $(printf '%s\n' "${figures[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')" >>"$counts"
    done
    echo
}

: >"$counts"
table uncontended "uncontended" "$short" "$long"
table suspending "64 tasks on 8 connections, body suspends once" "$contended_short" "$contended_long" --tasks 64 --body yield

case $mode in
    report) ;;
    update) python3 Benchmarks/Tools/instruction_thresholds.py update "$thresholds" "$counts" ;;
    check) python3 Benchmarks/Tools/instruction_thresholds.py check "$thresholds" "$counts" ;;
esac
