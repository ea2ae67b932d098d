#!/usr/bin/env bash
# Measures Gleaner at scale and rewrites the "Scale" section of BENCHMARKS.md.
#
#   bash bench/scale.sh
#
# 1. A scan with nothing new over 1,000,000 tiny files (1,000 directories) against
#    `find -type f -printf` with a stat of every file, the strongest reference for the same
#    work, measured in the same run with hyperfine; Gleaner's peak RSS with GNU time. Also
#    one such `find` per core at once, each over its share of the directories: the floor that
#    the machine's cores set for the same system calls.
# 2. An event-triggered scan after one new file in that tree (`gleaner run`, events on, default
#    debounce): the time of the scan that committed it, from its log line.
# 3. Memory against state size: `gleaner run` (a sidecar, default flags but --min-age 0) over
#    trees of 10,000, 100,000 and 1,000,000 files, fresh state: peak RSS, and RSS when idle
#    after committing them all (VmHWM and VmRSS 5 s after its first scan ended); and the same
#    after a restart that loads the state. The slope between sizes is the per-file cost.
#
# The data (in GLEANER_BENCH_DATA, default target/bench-data) is generated once by
# `gleaner-bench` from fixed seeds and kept between runs; making the 1,000,000 files takes
# about a minute. Tools that are missing (hyperfine, GNU time) are installed with apt-get.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${GLEANER_BENCH_DATA:-$ROOT/target/bench-data}
RUNS=${GLEANER_BENCH_RUNS:-5}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gleaner-scale.XXXXXX")
PIDS=()
EVENT_FILES=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # The tree is kept between runs: the files added for the events case go.
    rm -f "${EVENT_FILES[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "building release binaries"
cargo build --release --quiet -p sidecar -p gleaner-bench
GLEANER=$ROOT/target/release/gleaner
GEN=$ROOT/target/release/gleaner-bench

# tree NAME FILES DIRS BYTES SEED: generated once, kept (a stamp names its arguments).
tree() {
    local dir=$DATA/$1 stamp="$2 $3 $4 $5 $(sha256sum bench/src/main.rs | cut -c1-16)"
    if [ "$(cat "$dir.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "generating $1 ($2 files)"
        rm -rf "$dir"
        mkdir -p "$dir"
        "$GEN" tree "$dir" "$2" "$3" "$4" "$5"
        echo "$stamp" >"$dir.stamp"
    fi
}
tree million 1000000 1000 64 4
tree tree 100000 100 4096 3
tree small-tree 10000 10 4096 5

gleaner_once() {
    echo "$GLEANER run --once --min-age 0 --metrics-addr off --source-id bench --watch $1 --state $2/state --output $2/out"
}

# --- 1. nothing new over 1,000,000 files ---------------------------------------------------------
M=$WORK/million
log "committing the 1,000,000 files once (not timed)"
/usr/bin/time -f '%e %M' -o "$WORK/first" $(gleaner_once "$DATA/million" "$M") >/dev/null 2>&1
log "nothing new: gleaner run --once against find -printf"
FIND="find $DATA/million -type f -printf '%s %T@ %i %p\n' >/dev/null"
# The floor of this machine's cores for the same system calls: one such find per core, each
# over its share of the directories, all at once.
ls "$DATA/million" | sed "s|^|$DATA/million/|" | split -n "r/$(nproc)" - "$WORK/part."
cat >"$WORK/find-cores.sh" <<SH
for part in $WORK/part.*; do
    xargs -a "\$part" sh -c 'exec find "\$@" -type f -printf "%s %T@ %i %p\\n"' find >/dev/null &
done
wait
SH
hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/listing.json" \
    -n find "$FIND" -n find-cores "sh $WORK/find-cores.sh" \
    -n gleaner "$(gleaner_once "$DATA/million" "$M")" >&2
# The scan alone (what a running sidecar repeats every interval; the state is loaded once).
for _ in $(seq "$RUNS"); do
    RUST_LOG=scanner_core=debug $(gleaner_once "$DATA/million" "$M") 2>&1 >/dev/null |
        sed -n 's/.*scan complete: nothing new.* elapsed=\([0-9.]*\)\(m\?s\).*/\1 \2/p' >>"$WORK/scans"
done
/usr/bin/time -f '%M' -o "$WORK/nothing-new-rss" $(gleaner_once "$DATA/million" "$M") >/dev/null 2>&1

# --- 2. one new file in the 1,000,000, found through events --------------------------------------
log "event-triggered scans over 1,000,000 files"
EV=$WORK/events.log
RUST_LOG=scanner_core=debug,info $GLEANER run --min-age 0 --metrics-addr off --source-id bench \
    --watch "$DATA/million" --state "$M/state" --output "$M/out" 2>"$EV" &
pid=$!
PIDS+=("$pid")
until grep -q "scan complete" "$EV"; do
    kill -0 "$pid" || { cat "$EV" >&2; exit 1; }
    sleep 0.2
done
for i in $(seq "$RUNS"); do
    dir=$DATA/million/$(printf 'd%03d' $((i * 100)))
    [ -d "$dir" ] || dir=$(find "$DATA/million" -mindepth 1 -maxdepth 1 -type d | sed -n "${i}p")
    echo "event $i" >"$dir/.event-$i.tmp"
    mv "$dir/.event-$i.tmp" "$dir/event-$i.log"
    EVENT_FILES+=("$dir/event-$i.log")
    until [ "$(grep -c 'committed_files=1 ' "$EV")" -ge "$i" ]; do
        kill -0 "$pid" || { cat "$EV" >&2; exit 1; }
        sleep 0.1
    done
done
kill -TERM "$pid"
wait "$pid" || true
grep 'committed_files=1 ' "$EV" |
    sed -n 's/.* listed=\([0-9]*\) scope_dirs=\([0-9]*\) .* elapsed=\([0-9.]*\)\(m\?s\).*/\1 \2 \3 \4/p' >"$WORK/events"
rm -f "${EVENT_FILES[@]}"
EVENT_FILES=()

# --- 4. memory against state size ----------------------------------------------------------------
# sidecar NAME DIR: starts `gleaner run`, waits for its first scan to end, samples VmHWM and
# VmRSS 5 s later, stops it; then starts it again over the same state and samples again.
sidecar() {
    local name=$1 dir=$2 run=$WORK/sidecar-$1 pid
    mkdir -p "$run"
    for phase in first restart; do
        RUST_LOG=scanner_core=debug,info $GLEANER run --min-age 0 --metrics-addr off \
            --source-id bench --watch "$dir" \
            --state "$run/state" --output "$run/out" 2>"$run/$phase.log" &
        pid=$!
        PIDS+=("$pid")
        until grep -q "scan complete" "$run/$phase.log"; do
            kill -0 "$pid" || { cat "$run/$phase.log" >&2; exit 1; }
            sleep 0.2
        done
        sleep 5
        printf '%s %s %s %s\n' "$name" "$phase" \
            "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)" \
            "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)" >>"$WORK/memory"
        kill -TERM "$pid"
        wait "$pid" || true
    done
}
log "memory against state size"
sidecar 10000 "$DATA/small-tree"
sidecar 100000 "$DATA/tree"
sidecar 1000000 "$DATA/million"

log "writing BENCHMARKS.md"
python3 bench/report.py scale "$WORK" "$RUNS" BENCHMARKS.md
