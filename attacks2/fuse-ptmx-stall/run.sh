#!/bin/sh
# Usage: run.sh HOST PORT EXEC_TOKEN READ_TOKEN  (supd already running on HOST:PORT)
set -eu
H=$1; P=$2; T=$3; R=$4; D=$(cd "$(dirname "$0")" && pwd); W=$(mktemp -d)
cc -static -O2 -o "$W/fusehang" "$D/../../tests/fixtures/fuse/fusehang.c"; cp "$D/Dockerfile" "$W/"
docker build -q -t supd-attack2-fusehang:latest "$W" >/dev/null; rm -rf "$W"
docker run -d --name a2-fusehang --cap-add SYS_ADMIN --device /dev/fuse --label supd.attack=1 \
  --label io.supd.application=fusey --label io.supd.service=web --label io.supd.instance=1 \
  --label io.supd.container=web supd-attack2-fusehang:latest >/dev/null
sleep 3
Q="http://$H:$P/v1/state/applications/other/service-instances"
curl -s -m 5 -o /dev/null -w "before: %{http_code} in %{time_total}s\n" -H "Authorization: Bearer $R" "$Q"
"$D/trigger.py" "$H" "$P" "$T" fusey &
sleep 1
curl -s -m 5 -o /dev/null -w "during: %{http_code} in %{time_total}s (000 = no answer)\n" -H "Authorization: Bearer $R" "$Q" || true
wait
docker logs a2-fusehang 2>&1 | tail -1
docker rm -f a2-fusehang >/dev/null   # aborts the FUSE connection: supd resumes
curl -s -m 5 -o /dev/null -w "after removing the container: %{http_code} in %{time_total}s\n" -H "Authorization: Bearer $R" "$Q"
