#!/usr/bin/env bash
# Checks the DocC of Lifeguard, LifeguardPostgres, LifeguardBench, LifeguardHummingbird, LifeguardTestUtils and LifeguardDoctor, their catalogs
# (Sources/<module>/<module>.docc: landing pages, articles) with them: every symbol link resolves, every
# parameter of a public symbol is documented. Reads the modules of the debug build (run
# `swift build` first); prints each problem and exits 1 if there is any.
#
#   scripts/docs-check.sh
#
# Each module is checked on its own, so a link from LifeguardPostgres into Lifeguard
# (``LifeguardError``, ``Lifeguard/…``, ``Lane``) cannot resolve here and is not counted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=$(swift build --show-bin-path)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=()
for include in $(find .build/checkouts -name include -type d) Sources/CTimestampCounter/include; do
    flags+=(-Xcc "-I$include")
done
for map in $(find -L "$build" -maxdepth 3 -name module.modulemap | grep -v -e '-tool.build' -e 'ArgumentParser'); do
    flags+=(-Xcc "-fmodule-map-file=$map")
done
problems=0
for module in Lifeguard LifeguardPostgres LifeguardBench LifeguardHummingbird LifeguardTestUtils LifeguardDoctor; do
    mkdir -p "$work/$module"
    swift symbolgraph-extract -module-name "$module" -I "$build/Modules" "${flags[@]}" \
        -target "$(uname -m)-unknown-linux-gnu" -minimum-access-level public -output-dir "$work/$module"
    rm -f "$work/$module"/*@*.symbols.json   # extensions of other modules' types
    # Each warning with the place it points at; the links into Lifeguard left out.
    catalog=()
    [[ -d "Sources/$module/$module.docc" ]] && catalog=("Sources/$module/$module.docc")
    found=$(docc convert "${catalog[@]}" --additional-symbol-graph-dir "$work/$module" --fallback-display-name "$module" \
        --fallback-bundle-identifier "$module" --output-path "$work/$module.doccarchive" --analyze 2>&1 \
        | awk '/^warning/ { keep = $0 !~ /.(LifeguardError|Lifeguard|Lane). doesn.t exist|No valid content was found/ }
               keep && (/^warning/ || /-->/) { print }')
    if [[ -n "$found" ]]; then
        echo "$module:"
        sed 's/^/  /' <<<"$found"
        problems=$((problems + $(grep -c '^warning' <<<"$found")))
    fi
done
if (( problems > 0 )); then
    echo "docs-check: $problems problems" >&2
    exit 1
fi
echo "docs-check: every link resolves and every public parameter is documented"
