#!/usr/bin/env bash
# Many small files, measured in turn: ripgrep, an earlier gleaner and this one, one run of each
# per round, so that a noisy machine (a shared host whose speed changes from one minute to the
# next) slows all three alike. Prints the median of each and the ratios to ripgrep.
#
#   bash bench/paired.sh OLD_BINARY NEW_BINARY [stats|grep] [ROUNDS]
#
# stats is compared with `rg -c ''` (every file's lines), grep with `rg -c ERROR`. Needs the
# tree of `bash bench/run.sh` (GLEANER_BENCH_DATA, default target/bench-data); fresh state and
# outputs for every gleaner run.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/paired.sh OLD_BINARY NEW_BINARY [stats|grep] [ROUNDS]}
NEW=${2:?usage: bench/paired.sh OLD_BINARY NEW_BINARY [stats|grep] [ROUNDS]}
CASE=${3:-stats}
ROUNDS=${4:-15}
TREE=${GLEANER_BENCH_DATA:-$PWD/target/bench-data}/tree
[ -d "$TREE" ] || { echo "no tree in $TREE: run bash bench/run.sh first" >&2; exit 1; }
case $CASE in
    stats) RG=(rg -c '' "$TREE"); PROCESSOR=(--processor stats) ;;
    grep) RG=(rg -c ERROR "$TREE"); PROCESSOR=(--processor grep --pattern ERROR) ;;
    *) echo "case must be stats or grep" >&2; exit 2 ;;
esac
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gleaner-paired.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
}
gleaner() {
    rm -rf "$WORK/state" "$WORK/out"
    ms "$1" run --once --min-age 0 --metrics-addr off --source-id bench --watch "$TREE" \
        --state "$WORK/state" --output "$WORK/out" "${PROCESSOR[@]}"
}
"${RG[@]}" >/dev/null; gleaner "$OLD" >/dev/null; gleaner "$NEW" >/dev/null   # warm-up
for _ in $(seq "$ROUNDS"); do
    echo "rg $(ms "${RG[@]}")"
    echo "old $(gleaner "$OLD")"
    echo "new $(gleaner "$NEW")"
done >"$WORK/times"
median() { grep "^$1 " "$WORK/times" | cut -d' ' -f2 | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rg=$(median rg) old=$(median old) new=$(median new)
echo "$CASE, $ROUNDS rounds, medians: $(printf '%q ' "${RG[@]}")${rg} ms; old ${old} ms ($(awk -v a="$old" -v b="$rg" 'BEGIN {printf "%.2f", a / b}')x); new ${new} ms ($(awk -v a="$new" -v b="$rg" 'BEGIN {printf "%.2f", a / b}')x)"
