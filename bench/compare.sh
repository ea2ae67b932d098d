#!/usr/bin/env bash
# Compares two builds of `gleaner` on the processing benchmarks' data, in one run: before and
# after a change, so that the machine's own variation (another CPU, a busy neighbour) cancels
# out of the comparison.
#
#   bash bench/compare.sh REV                  # REV (built into target/compare) vs the working tree
#   bash bench/compare.sh OLD_BINARY NEW_BINARY
#
# Needs the data of `bash bench/run.sh` (GLEANER_BENCH_DATA, default target/bench-data). Each
# case runs both binaries twice each, alternately (old, new, old, new), GLEANER_BENCH_RUNS times
# (default 10) after one warm-up run, with fresh state and outputs every time; the reference tool
# of the case runs once more for scale. Prints the median of every command and new/old.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${GLEANER_BENCH_DATA:-$ROOT/target/bench-data}
RUNS=${GLEANER_BENCH_RUNS:-10}
[ -f "$DATA/stamp" ] || { echo "no benchmark data in $DATA: run bash bench/run.sh first" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is missing: bash bench/run.sh installs it" >&2; exit 1; }

case $# in
    1)
        tree=$ROOT/target/compare/tree
        rm -rf "$tree"
        git worktree add --force --detach "$tree" "$1" >/dev/null
        trap 'git worktree remove --force "$tree"' EXIT
        (cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/compare/target cargo build --release --quiet -p sidecar)
        OLD=$ROOT/target/compare/target/release/gleaner
        cargo build --release --quiet -p sidecar
        NEW=$ROOT/target/release/gleaner
        ;;
    2) OLD=$1 NEW=$2 ;;
    *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gleaner-compare.XXXXXX")
trap 'rm -rf "$WORK"; [ -z "${tree:-}" ] || git worktree remove --force "$tree"' EXIT
FRESH="rm -rf $WORK/state $WORK/out"
run() {
    local binary=$1 dir=$2
    shift 2
    echo "$binary run --once --min-age 0 --metrics-addr off --source-id bench --watch $dir --state $WORK/state --output $WORK/out $*"
}

# compare NAME REFERENCE_CMD DIR GLEANER_FLAGS...
compare() {
    local name=$1 reference=$2 dir=$3
    shift 3
    hyperfine --style basic --warmup 1 --runs "$RUNS" --prepare "$FRESH" \
        --export-json "$WORK/$name.json" -n reference "$reference" \
        -n old "$(run "$OLD" "$dir" "$@")" -n new "$(run "$NEW" "$dir" "$@")" \
        -n old "$(run "$OLD" "$dir" "$@")" -n new "$(run "$NEW" "$dir" "$@")" \
        >/dev/null 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
    python3 - "$name" "$WORK/$name.json" <<'PY'
import json, statistics, sys
name, path = sys.argv[1], sys.argv[2]
times = {}
for result in json.load(open(path))["results"]:
    times.setdefault(result["command"], []).extend(result["times"])
median = {k: statistics.median(v) * 1000 for k, v in times.items()}
print(f"| {name} | {median['reference']:.0f} ms | {median['old']:.0f} ms | {median['new']:.0f} ms "
      f"| {median['new'] / median['old']:.3f} |")
PY
}

LOG=$DATA/log/1g.log
echo "| case | reference | old | new | new/old |"
echo "|---|---:|---:|---:|---:|"
compare stats-1-worker "wc -l $LOG" "$DATA/log" --processor stats --workers 1
compare stats-all-cores "wc -l $LOG" "$DATA/log" --processor stats --workers "$(nproc)"
compare grep-literal "rg -c 'level=ERROR' $LOG" "$DATA/log" --processor grep --pattern "'level=ERROR'"
compare gzip "zcat $DATA/gz/1g.log.gz | wc -l" "$DATA/gz" --processor stats
AWK_PROGRAM='match($0, /service=[A-Za-z0-9_]+/) { c[substr($0, RSTART + 8, RLENGTH - 8)]++ } END { for (k in c) print k, c[k] }'
compare count-by "awk '$AWK_PROGRAM' $LOG" "$DATA/log" --processor count-by --key-regex "'service=(\\w+)'"
compare small-files "rg -c '' $DATA/tree" "$DATA/tree" --processor stats
