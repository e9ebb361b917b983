#!/usr/bin/env bash
# Reproduction: an ordinary container (default capabilities) freezes supd's exec child before
# its setsid. The exec never answers and cannot be cancelled; the frozen child keeps a copy of
# every descriptor of supd (listening socket included) after supd has stopped, so a restarted
# supd cannot listen on its address.
# Needs: supd running at 127.0.0.1:$PORT, started by this script's caller as
#   $SUPD_BIN --tokens T --listen 127.0.0.1:$PORT   (pid in $SUPD_PID)
# token $TOKEN with exec on application "atk"; Docker; image supd-test-busybox:latest.
set -euo pipefail
cd "$(dirname "$0")"
: "${PORT:?}" "${TOKEN:?}" "${SUPD_PID:?}" "${SUPD_BIN:?}" "${TOKENS:?}"
name=atk-stop-$$
cc -static -O2 -o stopper stopper.c
docker build -q -t supd-attack-stopper:latest . >/dev/null
docker run -d --name "$name" --label supd.attack=1 \
  --label io.supd.application=atk --label io.supd.service=stop --label io.supd.instance=1 \
  --label io.supd.container=c \
  supd-attack-stopper:latest sh -c '/stopper 2>/stopper.log & exec sleep 1000000' >/dev/null
trap 'docker rm -f "$name" >/dev/null; rm -f stopper' EXIT
sleep 2
url=http://127.0.0.1:$PORT/v1/state/applications/atk/service-instances/stop-1/containers/c/exec
for i in $(seq 1 10); do
  # The operator gives up after 3 s.
  timeout 3 curl -s -H "Authorization: Bearer $TOKEN" -d 'cmd: id' "$url" || echo "exec $i: no answer"
  docker cp "$name":/stopper.log - | tar xO | grep -q BEFORE && break
done
echo "--- stopper.log"; docker cp "$name":/stopper.log - | tar xO
echo "--- supd's children"; ps -o pid,stat,cmd --ppid "$SUPD_PID"
echo "--- stopping supd (SIGTERM), as an upgrade or restart would"
kill -TERM "$SUPD_PID"; sleep 6
echo "--- who listens on $PORT now"; ss -ltnp | grep ":$PORT " || true
echo "--- starting supd again"
timeout 5 "$SUPD_BIN" --tokens "$TOKENS" --listen "127.0.0.1:$PORT" 2>&1 | head -3 || true
