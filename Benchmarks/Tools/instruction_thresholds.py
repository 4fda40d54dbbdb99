#!/usr/bin/env python3
"""Instruction-count thresholds of the lease path, for scripts/instructions.sh.

  instruction_thresholds.py update THRESHOLDS COUNTS   writes COUNTS as the thresholds
  instruction_thresholds.py check THRESHOLDS COUNTS    exits 1 when a count exceeds its
                                                       threshold by more than its tolerance

COUNTS has one line per row and pool: "ROW POOL INSTRUCTIONS_PER_CYCLE". The thresholds file
keeps, per row and pool, the count and the tolerance (a fraction); the check reads the tolerance
from the file, so a change here takes effect with `update`. Uncontended, the floor repeats
exactly and Lifeguard without statistics to 0.1%; Lifeguard as it ships moves by up to 1.3%:
2%, the lease path's budget. With 64 tasks on 8 and a suspending body, counts depend on how the
two threads interleave, more so on a busy machine (on 2026-12-01 the floor moved by 3% between
two runs): 4% for the floor and Lifeguard without statistics, 8% for Lifeguard as it ships,
whose metrics export may or may not replay a last partial second.
"""
import json
import sys

TOLERANCE = {
    "uncontended": {"floor": 0.02, "lifeguard-nostats": 0.02, "lifeguard": 0.02},
    "suspending": {"floor": 0.04, "lifeguard-nostats": 0.04, "lifeguard": 0.08},
}


def read_counts(path):
    counts = {}
    with open(path) as file:
        for line in file:
            row, pool, value = line.split()
            counts.setdefault(row, {})[pool] = float(value)
    return counts


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("update", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, thresholds_path, counts_path = sys.argv[1:]
    counts = read_counts(counts_path)
    if mode == "update":
        thresholds = {
            row: {pool: {"instructions": value, "tolerance": TOLERANCE.get(row, {}).get(pool, 0.02)} for pool, value in sorted(pools.items())}
            for row, pools in sorted(counts.items())
        }
        with open(thresholds_path, "w") as file:
            json.dump(thresholds, file, indent=2)
            file.write("\n")
        print(f"wrote {thresholds_path}")
        return 0
    with open(thresholds_path) as file:
        thresholds = json.load(file)
    failed = False
    print("| row | pool | threshold | now | change | |")
    print("|---|---|---|---|---|---|")
    for row, pools in thresholds.items():
        for pool, limit in pools.items():
            now = counts.get(row, {}).get(pool)
            if now is None:
                print(f"| {row} | {pool} | {limit['instructions']:.1f} | missing | | FAIL |")
                failed = True
                continue
            change = now / limit["instructions"] - 1
            verdict = "ok"
            if change > limit["tolerance"]:
                verdict = f"FAIL (more than +{limit['tolerance']:.0%})"
                failed = True
            elif change < -limit["tolerance"]:
                verdict = "better: run scripts/instructions.sh --update and commit the thresholds"
            print(f"| {row} | {pool} | {limit['instructions']:.1f} | {now:.1f} | {change:+.1%} | {verdict} |")
    if failed:
        print("instruction counts regressed: see the rows marked FAIL", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
