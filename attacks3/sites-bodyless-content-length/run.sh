#!/bin/bash
# For an answer without a body (1xx, 204, 304, HEAD) supd copies the peer's first
# Content-Length verbatim (wire::client_head, Framing::Empty), unchecked: a 204 that
# announces 44 bytes, or a 304 whose Content-Length is "1, 70", reaches the client on its
# keep-alive connection. Exit 1 when such a header reaches the client.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
bad=0
for mode in 204cl 304junk; do
  P=$(rt_free_port)
  python3 "$HERE/../fakepeer.py" "$P" "$mode" "$RT_DIR/peer.log" & RT_PIDS+=($!)
  rt_start_a "http://127.0.0.1:$P"
  R1='GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'
  R2='GET /v1/state/applications/alpha/service-instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'
  out=$(TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 2 "$R1$R2")
  echo "=== peer answer $mode; the client's connection reads:"; printf '%s\n' "$out"
  if grep -qiE '^content-length: (44|1, 70)' <<<"$out"; then
    echo ">>> BUG ($mode): the peer's Content-Length for a bodyless answer is relayed unchecked"; bad=1
  fi
  kill "$A_PID" 2>/dev/null
done
exit $bad
