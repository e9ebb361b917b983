#!/bin/bash
# With a site token-file, every client of A is ONE token at the peer B, so B's
# connections-per-token cap is shared by all of A's clients: one client of A (its own cap at A
# is per its own token) takes every slot of the site token at B, and everybody else's
# forwarded requests get B's 503. Exit 1 when another client of A is refused that way.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
CAP=8   # B's connections-per-token for the demo (default 256: A's own per-token cap is also 256)
MALLORY=$("$SUPD" token create --name mallory --operations exec --applications alpha \
    --tokens "$RT_DIR/tokens.yaml" 2>/dev/null | tail -1)
# Peer B: a real supd with its own tokens file holding the site token A presents.
mkdir -m 700 "$RT_DIR/b"
SITE_TOKEN=$("$SUPD" token create --name site-a --operations read,exec,connect \
    --applications '*' --tokens "$RT_DIR/b/tokens.yaml" 2>/dev/null | tail -1)
chmod 600 "$RT_DIR/b/tokens.yaml"
echo "$SITE_TOKEN" > "$RT_DIR/b.token"; chmod 600 "$RT_DIR/b.token"
B_PORT=$(rt_free_port)
cat > "$RT_DIR/b/b.yaml" <<YAML
listen: [127.0.0.1:$B_PORT]
tokens: $RT_DIR/b/tokens.yaml
site: edge-b
limits: {connections-per-token: $CAP}
YAML
NAME=rt-sites-$$-$RANDOM
docker run -d --name "$NAME" --label supd.test=redteam-sites --label io.supd.application=alpha \
  --label io.supd.service=web --label io.supd.instance=1 --label io.supd.container=c \
  supd-test-busybox:latest sleep 3600 >/dev/null || exit 2
trap 'docker rm -f "$NAME" >/dev/null 2>&1; rt_cleanup' EXIT
"$SUPD" --config "$RT_DIR/b/b.yaml" >"$RT_DIR/b.log" 2>&1 & RT_PIDS+=($!)
rt_start_a "http://127.0.0.1:$B_PORT" "    token-file: $RT_DIR/b.token"
sleep 2
STATE='GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n'
echo "=== alice (read on alpha) before:"
TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 2 "$STATE" | head -1
EXEC='/v1/state/applications/alpha/service-instances/web-1/containers/c/exec-interactive?cmd=cat&tty=false&site=b'
TOKEN=$MALLORY python3 "$HERE/hold.py" "$A_PORT" "$EXEC" "$CAP" & RT_PIDS+=($!)
sleep 4
echo "=== alice (read on alpha) while mallory holds $CAP sessions (mallory's cap at A: 256):"
out=$(TOKEN=$READER python3 "$HERE/../rawclient.py" "$A_PORT" 2 "$STATE")
printf '%s\n' "$out" | grep -E '^HTTP|errors'
echo "=== B's log:"; grep -E "503|site-a" "$RT_DIR/b.log" | grep -v 'token "' | tail -2
if grep -q "^HTTP/1.1 503" <<<"$out"; then
  echo ">>> BUG: one client of A locked every other client of A out of site b"; exit 1
fi
