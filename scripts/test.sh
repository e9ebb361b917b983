#!/usr/bin/env bash
# The test command: everything the tests need on a fresh Debian machine, then the tests.
# Installs and starts the Docker engine when it is missing (leaves a running one alone),
# builds the busybox test image, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
scripts/build-test-image.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets 2>&1
