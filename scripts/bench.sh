#!/usr/bin/env bash
# The benchmark (issue 6): supd side by side with docker exec, the Docker API, nsenter and
# websocat, in one run on this machine. Sets up everything it needs on a fresh Debian machine
# (Docker engine, test image, nsenter, websocat built into target/peers), builds supd and the
# bench in release mode, prints the table and writes bench/RESULTS.md.
#
# scripts/bench.sh --quick: a short run with debug builds that only checks the bench works
# (scripts/test.sh calls it); it installs no peer and skips the ones missing, and writes no file.
#
# scripts/bench.sh --vm: the VM rows only (VM exec against the guest agent driven directly,
# interactive first output), in their own section of bench/RESULTS.md, which the full run
# keeps. Separate because a VM boots for it (5-20 s under TCG); `--vm --quick` checks it works.
#
# scripts/bench.sh --tls: issue 12's TLS rows (handshake + state get against plain, RSS with
# 1,000 idle TLS connections) and the socat relay ceilings of the tunnel rows, in their own
# section of bench/RESULTS.md, which the full run keeps. `--quick` runs them small too.
# socat (Debian's package) is installed by scripts/ensure-docker.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
vm=0
tls=0
for a in "$@"; do
  [ "$a" = --quick ] && quick=1
  [ "$a" = --vm ] && vm=1
  [ "$a" = --tls ] && tls=1
done

scripts/ensure-docker.sh
scripts/build-test-image.sh >/dev/null

if ! command -v nsenter >/dev/null 2>&1; then
  echo "bench: installing util-linux (nsenter)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q util-linux >/dev/null
fi
if [ $vm = 1 ]; then
  scripts/build-test-vm.sh >/dev/null
fi
if [ $quick = 0 ] && [ $vm = 0 ] && [ $tls = 0 ] && ! command -v websocat >/dev/null 2>&1 && [ ! -x target/peers/bin/websocat ]; then
  # Debian's apt has no websocat; crates.io has.
  echo "bench: building websocat into target/peers (once)"
  cargo install websocat --locked --quiet --root target/peers
fi

# The bench removes its containers itself; this covers a bench killed half-way.
cleanup() {
  ids=$(docker ps -aq --filter label=supd.bench=1)
  [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
}
trap cleanup EXIT

if [ $quick = 1 ]; then
  cargo build --quiet -p supd -p supd-bench
  target/debug/supd-bench --supd target/debug/supd "$@"
else
  cargo build --release --quiet -p supd -p supd-bench
  target/release/supd-bench "$@"
fi
