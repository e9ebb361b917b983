#!/usr/bin/env bash
# The test command: everything the tests need on a fresh Debian machine, then the tests.
# Installs and starts the Docker engine when it is missing (leaves a running one alone),
# builds the busybox test image, checks formatting, lints and unit files, fuzzes every parser
# briefly, runs every test, checks the API against docs/openapi.yaml (SUPD_SKIP_API_CHECK=1
# skips that), then checks that the benchmark runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
scripts/build-test-image.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy -p supd-bench --all-targets --quiet -- -D warnings
cargo build --quiet

# The unit files must pass systemd's own checker. It insists that ExecStart exists, so verify
# a copy that points at the binary just built.
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
sed "s|/usr/local/bin/supd|$PWD/target/debug/supd|" systemd/supd.service >"$units/supd.service"
cp systemd/supd.socket "$units/supd.socket"
systemd-analyze verify --man=no "$units/supd.service" "$units/supd.socket"
echo "systemd-analyze verify: ok"

# Every fuzz target for a short while (scripts/fuzz.sh runs them for longer); before the tests
# so that CI time stays bounded. SUPD_SKIP_FUZZ=1 skips it, SUPD_FUZZ_SECONDS changes it.
if [ "${SUPD_SKIP_FUZZ:-0}" != 1 ]; then
    scripts/fuzz.sh "${SUPD_FUZZ_SECONDS:-20}"
fi

# The tests. cargo test runs one test binary after another, which leaves the CPUs idle while
# tests wait on Docker, timeouts and child processes. With cargo-nextest (a process per test,
# across binaries) the binaries that only check behaviour run side by side; then, on their
# own with cargo test as before, those that measure supd (memory, CPU, latency bounds) and
# docker_events, whose containers flood the shared engine's event stream for every supd.
# Without cargo-nextest (building it costs more than it saves on a fresh machine), or with
# SUPD_PARALLEL_TESTS=0, cargo test runs them all in turn. SUPD_TEST_THREADS sets how many
# tests run at once (default: the number of CPUs).
#
# The VM binaries (tests/vm*.rs) each boot one real VM for all their tests, so they run with
# cargo test (one process per binary), started in the background beside the behaviour tests:
# most of their time is the guest booting and answering, not supd.
alone=(abuse conn_hardening docker_events filter_read fuse_stall http_strict mem_bounds soak)
vms=()
for f in tests/vm*.rs; do
    t=$(basename "$f" .rs)
    # tests/vm_state.rs needs no VM: it stays with the behaviour tests.
    [ "$t" = vm_state ] || vms+=("$t")
done
scripts/build-test-vm.sh >/dev/null
if [ "${SUPD_PARALLEL_TESTS:-1}" = 1 ] && cargo nextest --version >/dev/null 2>&1; then
    filter="" only=() vm_only=()
    for t in "${alone[@]}"; do
        filter+="${filter:+ | }binary(=$t)"
        only+=(--test "$t")
    done
    for t in "${vms[@]}"; do
        filter+="${filter:+ | }binary(=$t)"
        vm_only+=(--test "$t")
    done
    cargo test --no-run --quiet "${vm_only[@]}" 2>&1
    vm_log=$(mktemp)
    (cargo test "${vm_only[@]}" >"$vm_log" 2>&1; echo $? >"$vm_log.rc") &
    vm_job=$!
    status=0
    cargo nextest run --all-targets --no-fail-fast --final-status-level=slow \
        --test-threads "${SUPD_TEST_THREADS:-num-cpus}" -E "not ($filter)" 2>&1 || status=$?
    wait "$vm_job" || true
    cat "$vm_log"
    vm_status=$(cat "$vm_log.rc")
    rm -f "$vm_log" "$vm_log.rc"
    [ "$status" = 0 ] && [ "$vm_status" = 0 ] || exit 1
    cargo test "${only[@]}" 2>&1
else
    cargo test --all-targets 2>&1
fi

# The live daemon against docs/openapi.yaml (schemathesis) and an outside websocket client.
if [ "${SUPD_SKIP_API_CHECK:-}" != 1 ]; then
    scripts/api-check.sh
    # Again over a TLS listener (https://, wss://, a test CA), with fewer examples: the
    # operations are the same, what is checked here is the transport (about a minute).
    API_CHECK_TLS=1 API_CHECK_EXAMPLES=${API_CHECK_TLS_EXAMPLES:-10} scripts/api-check.sh
fi

# The benchmark only has to run here (few iterations, no timing is judged): scripts/bench.sh
# is the real thing.
scripts/bench.sh --quick
