#!/usr/bin/env bash
# The lease path on package-benchmark (Benchmarks/Benchmarks/LeasePath), against the thresholds
# checked in at Benchmarks/Thresholds/ (LeasePath.*.p90.json): allocations per lease exactly,
# wall-clock time only when it doubles. Exits non-zero on a regression.
#
#   scripts/benchmark-thresholds.sh          # check: about 1 minute once built (a first release build: several)
#   scripts/benchmark-thresholds.sh update   # rewrite the thresholds from a run (commit them with the change)
#
# Instruction counts, the stable measure of the lease path's time: scripts/instructions.sh --check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../Benchmarks"
[[ $# -le 1 ]] || { echo "usage: scripts/benchmark-thresholds.sh [check | update]" >&2; exit 2; }
case "${1:-check}" in
    check) swift package benchmark thresholds check --target LeasePath --path "$PWD/Thresholds" --no-progress ;;
    update) swift package --allow-writing-to-package-directory benchmark thresholds update --target LeasePath --path "$PWD/Thresholds" --no-progress ;;
    *) echo "usage: scripts/benchmark-thresholds.sh [check | update]" >&2; exit 2 ;;
esac
