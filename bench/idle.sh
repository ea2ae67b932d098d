#!/usr/bin/env bash
# An idle sidecar (issue 26's row "idle sidecar after committing 100,000 files: <= 12 MiB + the
# state's own size"): what a Pod keeps paying between scans.
#
#   bash bench/idle.sh [EARLIER_BINARY...]
#
# For each binary (the earlier ones given, then this tree's release build), three times: starts
# `gleaner run` as a sidecar (default flags, metrics served on a free port, but --min-age 0 so
# the first scan takes every file) over the 100,000 files of 4 KiB of `bench/scale.sh`, waits
# for its first scan to end, and samples VmRSS, RssAnon and RssFile from /proc 5 s later and
# again 40 s later (past the 30 s after which a quiet sidecar hands its code pages back). The
# state's own size is its documented cost, 64 bytes per entry (`State` in
# crates/state-store/src/state.rs; GLEANER_ENTRY_BYTES=80 for builds before 440010a) plus the
# paths' bytes. Writes target/bench-idle/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${GLEANER_BENCH_DATA:-$ROOT/target/bench-data}
OUT=$ROOT/target/bench-idle
RUNS=${GLEANER_BENCH_RUNS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gleaner-idle.XXXXXX")
PID=""
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

cargo build --release --quiet -p sidecar -p gleaner-bench
TREE=$DATA/tree
stamp="100000 100 4096 3 $(sha256sum bench/src/main.rs | cut -c1-16)"
if [ "$(cat "$TREE.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$TREE" && mkdir -p "$TREE"
    target/release/gleaner-bench tree "$TREE" 100000 100 4096 3
    echo "$stamp" >"$TREE.stamp"
fi
files=$(find "$TREE" -type f ! -name .gleaner-root | wc -l)
path_bytes=$(find "$TREE" -type f ! -name .gleaner-root -printf '%P' | wc -c)
ENTRY_BYTES=${GLEANER_ENTRY_BYTES:-64}
state_kib=$(((files * ENTRY_BYTES + path_bytes) / 1024))

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# sample BINARY: one run; prints "rss5 anon5 file5 rss40 anon40 file40" in KiB.
sample() {
    local run=$WORK/run
    rm -rf "$run" && mkdir -p "$run"
    "$1" run --min-age 0 --metrics-addr 127.0.0.1:0 --source-id bench --watch "$TREE" \
        --state "$run/state" --output "$run/out" 2>"$run/log" &
    PID=$!
    until grep -qs "scan complete" "$run/log"; do
        kill -0 "$PID" || { cat "$run/log" >&2; exit 1; }
        sleep 0.2
    done
    local line=""
    for wait in 5 35; do
        sleep "$wait"
        line+="$(status_kib "$PID" VmRSS) $(status_kib "$PID" RssAnon) $(status_kib "$PID" RssFile) "
    done
    kill -TERM "$PID"
    wait "$PID" || true
    PID=""
    echo "$line"
}

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

{
    echo "100,000 files committed (state: $(mib "$state_kib") MiB = $files entries x $ENTRY_BYTES B + $path_bytes B of paths); $RUNS runs each, MiB."
    echo
    echo "| binary | run | 5 s: RSS (anon + file) | 40 s: RSS (anon + file) | 40 s: RSS - state | goal <= 12 |"
    echo "|---|---:|---:|---:|---:|:---:|"
} >"$OUT/report.md"
for binary in "$@" target/release/gleaner; do
    name=$binary
    [ "$binary" != target/release/gleaner ] || name="this tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'))"
    for run in $(seq "$RUNS"); do
        read -r r5 a5 f5 r40 a40 f40 <<<"$(sample "$binary")"
        other=$((r40 - state_kib))
        met=no
        [ "$other" -gt $((12 * 1024)) ] || met=yes
        echo "| $name | $run | $(mib "$r5") ($(mib "$a5") + $(mib "$f5")) | $(mib "$r40") ($(mib "$a40") + $(mib "$f40")) | $(mib "$other") | $met |" >>"$OUT/report.md"
    done
done
cat "$OUT/report.md"
