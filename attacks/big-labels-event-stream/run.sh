#!/bin/sh
# A container with >1 MiB of labels and a 1 s health check breaks supd's Docker event stream
# on every probe; supd reconnects and resyncs, answering 503 for every application meanwhile.
# Usage: SUPD_PORT=47811 SUPD_ADMIN=<admin token> ./run.sh   (probes application "myapp")
set -e
D=$(cd "$(dirname "$0")" && pwd)
NAME=ap-biglabels-$$
python3 - > /tmp/$NAME.json <<'PY'
import json
print(json.dumps({"Image": "supd-test-busybox:latest", "Cmd": ["sleep", "100000"],
  "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000, "Timeout": 1000000000, "Retries": 1},
  "Labels": {"supd.attack": "1", "io.supd.application": "bigapp", "io.supd.service": "big",
             "io.supd.instance": "1", "io.supd.container": "big", "x-pad": "v" * (2 * 1024 * 1024)}}))
PY
ID=$(curl -s --unix-socket /var/run/docker.sock -H 'Content-Type: application/json' \
  -d @/tmp/$NAME.json "http://x/v1.41/containers/create?name=$NAME" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Id"])')
rm -f /tmp/$NAME.json
curl -s --unix-socket /var/run/docker.sock -X POST "http://x/v1.41/containers/$ID/start"
python3 "$D/../lib/latency_bg.py" 20 > /tmp/$NAME.out 2>&1 || true
docker rm -f "$ID" > /dev/null
echo "probes of another application answered 503: $(grep -c ' 503 ' /tmp/$NAME.out)"
tail -1 /tmp/$NAME.out
rm -f /tmp/$NAME.out
