#!/bin/bash
# SIGHUP re-resolves the sites' host names with getaddrinfo ON THE EVENT LOOP
# (server/signals.rs reload_sites -> sites::Peers::load -> to_socket_addrs). A resolver that
# does not answer stalls every client of supd for the resolver's whole timeout. Exit 1 when a
# trivial request sent just after the SIGHUP takes more than 2 s.
#
# Runs in private network and mount namespaces: /etc/resolv.conf is bind-mounted to point at
# 127.0.0.1, where deaddns.py swallows the queries.
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${RT_IN_NS:-}" ]; then
  (cd "$HERE/../.." && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} cargo build -q --bin supd) || exit 2
  exec unshare -n -m env RT_IN_NS=1 bash "$0"
fi
ip link set lo up
source "$HERE/../sites-lib.sh"
rt_setup
printf 'nameserver 127.0.0.1\noptions timeout:5 attempts:2\n' > "$RT_DIR/resolv.conf"
mount --bind "$RT_DIR/resolv.conf" /etc/resolv.conf
python3 "$HERE/deaddns.py" "$RT_DIR/dns.ready" & RT_PIDS+=($!)
sleep 0.3
P=$(rt_free_port)
python3 "$HERE/../fakepeer.py" "$P" ok "$RT_DIR/peer.log" & RT_PIDS+=($!)
rt_start_a "http://127.0.0.1:$P"
REQ='GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n'
t() { local s=$(date +%s.%N); TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 30 "$REQ" | head -1; echo "  took $(echo "$(date +%s.%N) - $s" | bc) s"; }
echo "=== before SIGHUP: a forwarded request"; t
# The operator adds a peer by host name and reloads.
printf '  c:\n    url: http://peer-c.example.invalid:4646\n' >> "$RT_DIR/a.yaml"
kill -HUP "$A_PID"
sleep 0.3
echo "=== 0.3 s after SIGHUP: the same request"
s=$(date +%s.%N); t; d=$(echo "$(date +%s.%N) - $s" | bc)
echo "=== supd A's log"; grep -v "token \"" "$RT_DIR/a.log"
if [ "$(echo "$d > 2" | bc)" = 1 ]; then
  echo ">>> BUG: the loop stood still while SIGHUP waited for DNS ($d s)"; exit 1
fi
exit 0
