#!/usr/bin/env bash
# The floor of Gleaner's system calls on many small files (issue 26). Alternated rounds over the
# small-files tree of bench/run.sh: `rg -c ''`, `rg -c ERROR`, each mode of the probe (src/main.rs
# says which calls each makes) and `gleaner run --once` (stats, a fresh state each time), one of
# each per round, so that a noisy machine slows all alike. Prints the median wall time of each and
# its ratios to both ripgreps.
#   bash bench/floor-probe/run.sh [TREE] [GLEANER] [ROUNDS]
# Defaults: target/bench-data/tree, target/release/gleaner, 10 rounds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TREE=$(realpath "${1:-$ROOT/target/bench-data/tree}")
GLEANER=$(realpath "${2:-$ROOT/target/release/gleaner}")
ROUNDS=${3:-10}
[ -d "$TREE" ] || { echo "no tree in $TREE: run bash bench/run.sh first" >&2; exit 1; }
cd "$(dirname "$0")"
cargo build -q --release
P=target/release/floor-probe
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
ms() {
    local s e
    s=$(date +%s%N)
    "$@" >/dev/null 2>"$WORK/err" || { echo "failed: $* ($(tail -1 "$WORK/err"))" >&2; return 1; }
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
}
row() { local name=$1 t; shift; t=$(ms "$@"); echo "$name $t"; }
gleaner() { "$GLEANER" run --once --min-age 0 --metrics-addr off --source-id bench \
    --watch "$TREE" --state "$WORK/g/state" --output "$WORK/g/out" --processor stats; }
MODES=(std3 uring3 std4 mixed4 std5 survey5 uring4)
CORES=$(nproc)
# Every mode must count the lines ripgrep counts (a warm-up too).
LINES=$(rg -c '' "$TREE" | awk -F: '{n += $NF} END {print n}')
for m in "${MODES[@]}"; do
    got=$($P "$m" "$TREE" "$CORES" | awk '{print $(NF - 1)}')
    [ "$got" = "$LINES" ] || { echo "$m counted $got lines, ripgrep $LINES" >&2; exit 1; }
done
gleaner >/dev/null 2>&1
for _ in $(seq "$ROUNDS"); do
    rm -rf "$WORK/g"   # a fresh state for each gleaner run, outside its time
    row rg rg -c '' "$TREE"
    row rg-ERROR rg -c ERROR "$TREE"
    for m in "${MODES[@]}"; do row "$m" "$P" "$m" "$TREE" "$CORES"; done
    row gleaner gleaner
done >"$WORK/times"
median() { grep "^$1 " "$WORK/times" | cut -d' ' -f2 | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rg=$(median rg) rg_error=$(median rg-ERROR)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "$ROUNDS rounds, medians; gleaner is \`run --once --processor stats\`"
for k in rg rg-ERROR "${MODES[@]}" gleaner; do
    v=$(median "$k")
    printf '%-9s %5d ms  %sx rg -c %s  %sx rg -c ERROR\n' "$k" "$v" "$(ratio "$v" "$rg")" "''" "$(ratio "$v" "$rg_error")"
done
