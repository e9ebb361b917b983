#!/usr/bin/env bash
# Run supd with its default configuration: listens on 127.0.0.1:4646, tokens in
# /etc/supd/tokens.yaml (created on first start with an admin token written to
# /etc/supd/admin.token). Installs and starts the Docker engine when it is missing.
# Extra arguments go to supd (e.g. --listen unix:/run/supd/supd.sock).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
cargo build --release --quiet
# target/release/supd stays writable by root here: supd re-executes itself from a sealed
# in-memory copy at start-up, so what a container could reach through /proc/<pid>/exe is that
# copy, never this file (CVE-2019-5736). Installed, the binary lives under /usr/local/bin,
# read-only for supd under systemd's ProtectSystem=full.
exec target/release/supd "$@"
