#!/bin/bash
# A forwarded answer relayed to a TLS client whose connection closes after it (Connection:
# close; or a peer body that ends where the peer closes) loses its last records: forward.rs
# shuts the client's TCP side (close_notify is only queued) while rustls still holds up to
# 32 KiB of the answer. Exit 1 when the body arrives short.
#
# Runs itself in a private network namespace whose TCP send buffers are capped at 64 KiB
# (net.ipv4.tcp_wmem is per namespace), as on a real link to a slow client: on loopback the
# kernel grows supd's send buffer to MiBs, so the socket always takes what rustls holds.
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${RT_IN_NETNS:-}" ]; then
  (cd "$HERE/../.." && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} cargo build -q --bin supd) || exit 2
  exec unshare -n env RT_IN_NETNS=1 bash -c \
    'ip link set lo up && sysctl -qw net.ipv4.tcp_wmem="4096 16384 65536" && exec bash "$0"' "$0"
fi
source "$HERE/../sites-lib.sh"
rt_setup
bad=0
for mode in big bigclose; do
  P=$(rt_free_port)
  python3 "$HERE/../fakepeer.py" "$P" "$mode" "$RT_DIR/peer.log" & RT_PIDS+=($!)
  RT_TLS=1 rt_start_a "http://127.0.0.1:$P"
  echo "=== peer answer: $mode"
  TOKEN=$READER python3 "$HERE/client.py" "$A_PORT" "$RT_DIR/pki/ca.pem" \
      '/v1/state/applications/alpha/service-instances?site=b' 1 || bad=1
  kill "$A_PID" 2>/dev/null
done
[ $bad = 1 ] && echo ">>> BUG: the relayed answer was cut short over TLS"
exit $bad
