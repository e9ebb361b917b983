#!/usr/bin/env bash
# Runs the cargo-fuzz targets under fuzz/ one after the other, each for SECONDS (default 60):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Leak detection is on, an input taking over 10 s is a hang, over 2 GiB of memory a failure.
# The committed seeds (fuzz/corpus/<target>) are read; what the runs grow goes to
# fuzz/work/<target> (ignored by git), logs to fuzz/work/<target>.log. Exits non-zero when a
# target found something, naming it and its artifact (under fuzz/artifacts/<target>/).
# Needs nightly features: stable Rust with RUSTC_BOOTSTRAP=1 is enough.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-60}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
shift || true

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Debug assertions on: integer overflow in a parser is a finding too.
cargo fuzz build --debug-assertions

failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    log="work/$t.log"
    echo "fuzz: $t for ${secs}s"
    # request_bodies is about time: bodies up to the largest an endpoint takes (64 KiB), and
    # an input over 1 s is a finding (the nesting attack took seconds to minutes).
    timing=(-timeout=10)
    if [ "$t" = request_bodies ]; then
        timing=(-timeout=1 -max_len=70000)
    fi
    if cargo fuzz run --debug-assertions "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" "${timing[@]}" -rss_limit_mb=2048 -detect_leaks=1 \
        -print_final_stats=1 >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "fuzz: $t ok (${execs:-?} executions, $(find "work/$t" -type f | wc -l) corpus entries)"
    else
        failed+=("$t")
        echo "fuzz: $t FAILED; the end of $log:" >&2
        tail -n 40 "$log" >&2
        grep -o 'Test unit written to [^ ]*' "$log" >&2 || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs}s each without a finding"
