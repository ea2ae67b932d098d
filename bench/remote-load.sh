#!/usr/bin/env bash
# The 1,000,000-file row of issue 26 (nothing new: time and peak RSS) with the state in an
# object store, as a sidecar in a Pod keeps it, rather than on local disk as bench/scale.sh
# measures it.
#
#   bash bench/remote-load.sh [BINARY...]
#
# Commits the 1,000,000 files of bench/scale.sh's tree once into a local state (not timed; the
# same log shape as bench/scale.sh makes: a snapshot and the deltas after it), copies that state
# into moto (the S3 server of the test suite, started on 127.0.0.1 by tests/servers.sh), then,
# GLEANER_BENCH_RUNS rounds (default 5), one of each per round: `gleaner state inspect` (the
# load alone) and `gleaner run --once` over the tree, with the state in moto, for every binary
# given and this tree's release build; and `run --once` of this tree's build with the local
# state. Prints each run's wall time and peak RSS (GNU time), then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${GLEANER_BENCH_DATA:-$ROOT/target/bench-data}
RUNS=${GLEANER_BENCH_RUNS:-5}
TREE=$DATA/million
[ -d "$TREE" ] || { echo "no tree in $TREE: run bash bench/scale.sh first" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gleaner-remote.XXXXXX")
source tests/servers.sh
trap 'stop_servers; rm -rf "$WORK"' EXIT

cargo build --release --quiet -p sidecar
BINARIES=("$@" "$ROOT/target/release/gleaner")

echo "committing the 1,000,000 files once into a local state (not timed)" >&2
"$ROOT/target/release/gleaner" run --once --min-age 0 --metrics-addr off --source-id bench \
    --watch "$TREE" --state "$WORK/state" --output "$WORK/out" >/dev/null 2>&1

start_servers >"$WORK/servers.log" 2>&1
BUCKET=${GLEANER_TEST_S3#s3://}
"$TOOLS_DIR/moto/bin/python" - "$WORK/state/bench" "$BUCKET" <<'PY'
import os, sys
import boto3
local, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"],
                  region_name=os.environ.get("AWS_REGION", "us-east-1"))
names = sorted(os.listdir(local))
for name in names:
    s3.upload_file(os.path.join(local, name), bucket, "state/bench/" + name)
sizes = [os.path.getsize(os.path.join(local, n)) for n in names]
print(f"copied {len(names)} objects, {sum(sizes) / 2**20:.1f} MiB, to s3://{bucket}/state/bench",
      file=sys.stderr)
PY
REMOTE=$GLEANER_TEST_S3/state

# measure NAME COMMAND...: one run; appends "NAME seconds KiB" to the results.
measure() {
    local name=$1
    shift
    /usr/bin/time -f "$name %e %M" -a -o "$WORK/results" "$@" >/dev/null 2>"$WORK/last.log" ||
        { cat "$WORK/last.log" >&2; exit 1; }
    tail -1 "$WORK/results"
}
ONCE=(run --once --min-age 0 --metrics-addr off --source-id bench --watch "$TREE" --output "$WORK/out")
for _ in $(seq "$RUNS"); do
    for binary in "${BINARIES[@]}"; do
        name=$(basename "$binary")
        [ "$binary" != "$ROOT/target/release/gleaner" ] ||
            name="this-tree-$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
        measure "$name:inspect-s3" "$binary" state inspect --state "$REMOTE" --source-id bench
        measure "$name:once-s3" "$binary" "${ONCE[@]}" --state "$REMOTE"
    done
    measure "local:once" "$ROOT/target/release/gleaner" "${ONCE[@]}" --state "$WORK/state"
done
echo
echo "medians of $RUNS runs (goal of the row: peak <= 102,400 KiB):"
python3 - "$WORK/results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, seconds, kib = line.split()
    runs[name].append((float(seconds), int(kib)))
for name, values in runs.items():
    seconds = statistics.median(v[0] for v in values)
    kib = [v[1] for v in values]
    print(f"{name:40s} {seconds * 1000:7.0f} ms   peak {statistics.median(kib):9,.0f} KiB "
          f"(min {min(kib):,}, max {max(kib):,})")
PY
