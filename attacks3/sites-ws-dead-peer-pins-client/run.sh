#!/bin/bash
# A forwarded websocket whose peer has gone is meant to be judged by the write timeout
# (forward.rs check_client_stall: "the end of a websocket whose peer has gone"). But the relay
# reads the peer only while its 256 KiB buffer towards the client has room: when a client that
# reads nothing has let that buffer fill, the peer's end is never read, peer_eof never set,
# and the session (client socket, the peer's dead socket in CLOSE-WAIT, 256 KiB + socket
# buffers) is kept forever. Exit 1 when it is still there long after the write timeout.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
WS='/v1/state/applications/alpha/service-instances/web-1/connect?protocol=tcp&port=80&site=b'
bad=0
for kib in 64 4096; do
  P=$(rt_free_port)
  python3 "$HERE/../fakepeer.py" "$P" "ws$kib" "$RT_DIR/peer.log" & RT_PIDS+=($!)
  rt_start_a "http://127.0.0.1:$P" "limits: {write-timeout-ms: 2000}"
  TOKEN=$ADMIN python3 "$HERE/client.py" "$A_PORT" "$WS" 20 > "$RT_DIR/cport" & CL=$!
  sleep 12   # the peer gives up after 3 s of blocked writes; write timeout 2 s; margin
  cport=$(cat "$RT_DIR/cport")
  echo "=== peer sent ${kib} KiB then closed; 12 s later, supd A's sockets:"
  ss -tnp state all "( sport = :$A_PORT and dport = :$cport ) or ( dport = :$P )" | grep "pid=$A_PID" \
    | awk '{print "   ", $1, $2, $3, $4, $5}'
  grep "$P\|ws:" "$RT_DIR/peer.log" | tail -1
  grep -E "forward|client took" "$RT_DIR/a.log" | grep -v 'token "' | tail -3
  if ss -tn state established "( sport = :$A_PORT and dport = :$cport )" | grep -q ESTAB \
     || ss -tnp "( sport = :$A_PORT and dport = :$cport )" | grep -q "pid=$A_PID"; then
    [ "$kib" = 4096 ] && { echo ">>> BUG: the client is still held, its peer long gone"; bad=1; }
    [ "$kib" = 64 ] && echo "(control unexpectedly held too)"
  else
    echo "    (client dropped, as it should be)"
  fi
  kill $CL "$A_PID" 2>/dev/null; wait $CL 2>/dev/null
done
exit $bad
