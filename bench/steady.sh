#!/usr/bin/env bash
# The sidecar under a steady emitter (the last row of issue 26's goals): what a user pays for
# Gleaner in their Pod. Runs bench/steady.py for the release binary, and for an earlier binary
# right before it when one is given (same machine, same run), and writes the report and the plot.
#
#   bash bench/steady.sh [EARLIER_BINARY]
#
# GLEANER_STEADY_SECONDS (default 300) and GLEANER_STEADY_RATE_MB (default 20) set the emitter;
# the report goes to target/bench-steady/, the plot of this binary to bench/steady.png.
# matplotlib is installed once into .tools/bench-venv (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${GLEANER_STEADY_SECONDS:-300}
RATE=${GLEANER_STEADY_RATE_MB:-20}
OUT=target/bench-steady
mkdir -p "$OUT"
VENV=.tools/bench-venv
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'matplotlib==3.9.*'
fi
cargo build --release -q -p sidecar
if [ $# -ge 1 ]; then
    echo "== earlier binary: $1"
    "$VENV/bin/python" bench/steady.py --gleaner "$1" --seconds "$SECONDS_RUN" --rate-mb "$RATE" \
        --report "$OUT/earlier.md" --plot "$OUT/earlier.png"
fi
echo "== this binary: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
"$VENV/bin/python" bench/steady.py --gleaner target/release/gleaner --seconds "$SECONDS_RUN" \
    --rate-mb "$RATE" --report "$OUT/report.md" --plot bench/steady.png
