#!/bin/bash
# An HTTP/1.0 client whose request is forwarded gets the peer's chunked body passed through
# as chunked (wire::client_head: Framing::Chunked -> "transfer-encoding: chunked"), which an
# HTTP/1.0 recipient does not know (RFC 9112 7.1: a server MUST NOT send chunked to 1.0).
# Exit 1 when the 1.0 client is sent chunked framing.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
P=$(rt_free_port)
python3 "$HERE/../fakepeer.py" "$P" chunked "$RT_DIR/peer.log" & RT_PIDS+=($!)
rt_start_a "http://127.0.0.1:$P"
out=$(TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 2 \
  'GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n')
printf '%s\n' "$out"
if grep -qi '^transfer-encoding: chunked' <<<"$out"; then
  echo ">>> BUG: an HTTP/1.0 client was sent a chunked body; it reads the chunk lines as data"
  exit 1
fi
