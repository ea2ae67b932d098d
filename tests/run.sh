#!/usr/bin/env bash
# Gleaner's whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   ./tests/run.sh
#
# Formatting, lints, docs, unit tests, the storage conformance suite against real servers (moto
# for S3 and Azurite for Azure, installed from PyPI and npm into .tools/), end-to-end tests
# against the real `gleaner` binary (the crash campaign with SIGKILLs included), doctests and the
# library example, the Helm chart (tests/k8s/run.sh: real Helm, kubernetes-validate, the rendered
# Pods run as local processes), the observability files (tests/observability/run.sh: promtool and
# amtool checks, the dashboard against Grafana's schema, a real Prometheus and Alertmanager firing
# into a Slack webhook stand-in), the container image (tests/image/run.sh: hadolint, the static rootfs, run in a
# read-only chroot as uid 65532 against moto), the release (tests/release/run.sh: release/release.sh
# builds and publishes to Debian's docker-registry on 127.0.0.1, then the image, chart, SBOM and
# checksums are checked as a consumer sees them; it reuses the image step's static build), the output schema (tests/outputs/run.sh: every
# line the end-to-end tests wrote, checked against schema/ with fastjsonschema from PyPI), the
# engines (tests/engines/run.sh: DuckDB and PySpark from PyPI run examples/queries/ over real
# outputs, flat and hive, plain and gzipped), and a build of the fuzz targets (cargo fuzz, with the nightly toolchain;
# cargo-fuzz is installed into .tools/ when missing). Servers listen on 127.0.0.1 only and are
# stopped by PID when the script ends.
#
# Environment:
#   GLEANER_CRASH_KILLS     kills in the crash campaign (default 40)
#   GLEANER_CAMPAIGN_KILLS  kills in the supervised campaign (default 200)
#   GLEANER_CLEANUP_KILLS   kills per cleanup mode (default 30)
#   GLEANER_OUTAGE_SECS     length of the storage outage (default 60)
#   GLEANER_TEST_SEED       replay a seeded test run
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n==> %s  (%ds)\n' "$*" "$((SECONDS - started))"; }

step "tools and servers"
cargo --version
# shellcheck source=tests/servers.sh
source tests/servers.sh
start_servers
# The tests that need the servers are #[ignore]d under plain `cargo test`; run them all here.
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --locked --no-fail-fast --run-ignored all)
else
  echo "cargo-nextest not found: using cargo test"
  runner=(cargo test --workspace --locked --no-fail-fast -- --include-ignored)
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "unit and end-to-end tests"
# The end-to-end tests keep a copy of every output object they wrote, for the schema check.
outputs_archive=$(mktemp -d)
GLEANER_OUTPUT_ARCHIVE="$outputs_archive" "${runner[@]}"

step "output schema: every line the end-to-end tests wrote, against schema/ (fastjsonschema)"
./tests/outputs/run.sh "$outputs_archive"
rm -rf "$outputs_archive"

step "doctests"
cargo test --workspace --doc --locked

step "library example"
# Without `-p`: the workspace's feature set, as the tests were built with; `-p scanner-core`
# would resolve features for that package alone and rebuild 21 dependencies (a minute in CI).
cargo run --locked --quiet --example line_lengths

# The fuzz targets (their own workspace and target directory, with the nightly toolchain) build
# in the background, at the lowest CPU priority, while the next steps mostly wait on servers,
# Pods and a JVM; the last step waits for them. --dev: the same targets, sanitizer and coverage
# instrumentation, without the optimised build of every dependency (about 3 minutes here instead
# of 8); `fuzz run` builds release.
fuzz_log=$(mktemp)
fuzz_pid=
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  setsid --wait nice -n 19 bash -c '
    set -e
    if ! command -v cargo-fuzz >/dev/null && [ ! -x .tools/cargo/bin/cargo-fuzz ]; then
      cargo install --quiet --locked --root .tools/cargo cargo-fuzz --version 0.13.2
    fi
    PATH="$PWD/.tools/cargo/bin:$PATH"
    cd fuzz && cargo +nightly fuzz build --dev
  ' >"$fuzz_log" 2>&1 &
  fuzz_pid=$!
else
  echo "no nightly toolchain (rustup toolchain install nightly): fuzz targets not built" >"$fuzz_log"
fi
stop_fuzz() { [ -z "$fuzz_pid" ] || kill -TERM -- "-$fuzz_pid" 2>/dev/null || true; }
trap 'stop_fuzz; stop_servers' EXIT

step "Helm chart: lint, golden renders, kubernetes-validate, bad values, the rendered Pods run for real"
./tests/k8s/run.sh

step "observability: rules, alerts, Alertmanager, dashboard; real Prometheus and Alertmanager end to end"
./tests/observability/run.sh

step "engines: DuckDB and Spark (local) run examples/queries/ over real outputs, answers equal to the inputs"
./tests/engines/run.sh

step "container image (hadolint, static rootfs, run read-only as uid 65532 against moto)"
./tests/image/run.sh

step "release (release/release.sh against a real registry on 127.0.0.1; the image step's static build is reused)"
./tests/release/run.sh

step "fuzz targets (build only, --dev, started in the background after the library example)"
if [ -n "$fuzz_pid" ]; then
  if wait "$fuzz_pid"; then
    tail -n 3 "$fuzz_log"
  else
    cat "$fuzz_log"
    echo "the fuzz targets did not build" >&2
    exit 1
  fi
  fuzz_pid=
else
  cat "$fuzz_log"
fi

step "all passed in $((SECONDS - started))s"
