#!/bin/bash
# A hostile peer answers a forwarded request with an interim 1xx (100, 102, or a 101 to a
# request that asked for no upgrade) and then its real answer. supd A relays the 1xx as if it
# were the whole answer, drops the peer's real answer and hands the client's keep-alive
# connection back: the client's NEXT answer (here: a local one) is read as the final answer
# of the forwarded request. Exit 1 when the bug shows.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
bad=0
for mode in 1xx 102 101; do
  P=$(rt_free_port)
  python3 "$HERE/../fakepeer.py" "$P" "$mode" "$RT_DIR/peer-$mode.log" & RT_PIDS+=($!)
  rt_start_a "http://127.0.0.1:$P"
  # Request 1 goes to site b; request 2 (pipelined, same connection) is served by A itself.
  R1='GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'
  R2='GET /v1/state/applications/alpha/service-instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'
  out=$(TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 3 "$R1$R2")
  echo "=== peer mode $mode: what the client read on its connection"
  printf '%s\n' "$out"
  if ! grep -q "final answer" <<<"$out"; then
    echo ">>> BUG ($mode): the peer's final answer never reached the client; the connection"
    echo ">>> carried on after the interim head, so answer #2 is taken as answer #1"
    bad=1
  fi
  kill "$A_PID" 2>/dev/null
done
exit $bad
