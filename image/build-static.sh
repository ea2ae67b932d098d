#!/usr/bin/env bash
# Builds Gleaner's static binary, as the Dockerfile does (the `dist` profile, crt-static, for
# x86_64-unknown-linux-gnu), into target/x86_64-unknown-linux-gnu/dist/gleaner.
#
#   image/build-static.sh
#
# image/build-rootfs.sh and release/release.sh build it the same way (the commit given as
# GLEANER_BUILD_COMMIT alike), so that after one of them the others' builds are no-ops: CI
# builds it once, in the background while other steps run (tests/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GLEANER_BUILD_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) \
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --locked --quiet --profile dist --target x86_64-unknown-linux-gnu -p sidecar
