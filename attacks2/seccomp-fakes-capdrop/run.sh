#!/bin/sh
# Usage: run.sh SUPD_BASE_URL EXEC_TOKEN   (supd already running)
set -eu
B=$1; T=$2; D=$(cd "$(dirname "$0")" && pwd); W=$(mktemp -d)
cc -static -O2 -o "$W/init" "$D/init.c"; cp "$D/Dockerfile" "$W/"
docker build -q -t supd-attack2-capfake:latest "$W" >/dev/null; rm -rf "$W"
docker run -d --name a2-capfake --cap-add SYS_ADMIN --label supd.attack=1 \
  --label io.supd.application=capfake --label io.supd.service=web --label io.supd.instance=1 \
  --label io.supd.container=web supd-attack2-capfake:latest >/dev/null
sleep 3
echo "container's first process:"; docker exec a2-capfake busybox grep -E '^Cap(Eff|Bnd)' /proc/1/status
echo "command started by supd's exec:"
curl -s -m 20 -H "Authorization: Bearer $T" -d '{"cmd": "busybox grep -E \"^(Cap|NoNewPrivs)\" /proc/self/status"}' \
  "$B/v1/state/applications/capfake/service-instances/web-1/containers/web/exec"; echo
docker rm -f a2-capfake >/dev/null
