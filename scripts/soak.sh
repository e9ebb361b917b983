#!/usr/bin/env bash
# The long soak: 10,000 cycles each of exec, interactive exec and connect (interleaved) through
# one supd, in release mode; prints descriptors, children and RSS before and after.
# SUPD_SOAK_CYCLES overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
scripts/build-test-image.sh >/dev/null
SUPD_SOAK_CYCLES="${SUPD_SOAK_CYCLES:-10000}" \
  cargo test --release --test soak -- --nocapture
