#!/usr/bin/env bash
# Where a lease-benchmark loop spends its instructions, by function: a callgrind-like profile
# under qemu-user with our plugin (Benchmarks/Tools/instruction_count.c, which writes the count
# of each block's runs when $INSTRUCTION_PROFILE is set) and Benchmarks/Tools/instruction_profile.py. Repeatable whatever
# the machine's load; it found every waiting-path cost that BENCHMARKS.md lists.
#
#   scripts/instruction-profile.sh POOL [CYCLES] [lease-benchmark options]
#   scripts/instruction-profile.sh lifeguard-nostats 200000 --tasks 64 --body yield
#
# POOL is one of lease-benchmark's --only pools (floor, lifeguard, lifeguard-nostats,
# postgresnio). Figures are per cycle, start-up included: use enough cycles (the default,
# 1,000,000, suits the uncontended loop; 200,000 the contended ones). Needs qemu-x86_64
# (Debian's qemu-user), gcc, python3, binutils, and the release build of lease-benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $# -ge 1 ]] || { sed -n '2,13p' "${BASH_SOURCE[0]}" >&2; exit 2; }
pool=$1
cycles=${2:-1000000}
shift $(( $# >= 2 ? 2 : 1 ))
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-x86_64: apt-get install qemu-user" >&2; exit 1; }

mkdir -p .build-instructions
gcc -shared -fPIC -O2 -Wall -o .build-instructions/libinstruction_count.so Benchmarks/Tools/instruction_count.c
swift build -c release --package-path Benchmarks --product lease-benchmark 2>&1 | tail -1 >&2
profile=.build-instructions/profile-$pool.txt
INSTRUCTION_PROFILE=$profile qemu-x86_64 -plugin .build-instructions/libinstruction_count.so \
    Benchmarks/.build/release/lease-benchmark --only "$pool" "$@" --cycles "$cycles" >/dev/null 2>&1
python3 Benchmarks/Tools/instruction_profile.py "$profile" "$cycles" 40
