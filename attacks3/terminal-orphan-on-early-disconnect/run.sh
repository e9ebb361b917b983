#!/usr/bin/env bash
# A client of vm-container/exec-interactive that goes away after its request but before the
# 101 (while supd connects the port and asks the agent to start the command) leaves the
# command running in the guest on the terminal port: nobody sends it SIGHUP/SIGKILL, and the
# port is handed to the next session, whose input the orphan then reads.
source "$(dirname "$0")/../common/lib.sh"
build_supd
start_supd
launcher "$RUN_ID-vm" rtvm-orph -e SUPD_VM_ACCEL=tcg supd-test-vm:local
APP=$BASE/rtvm-orph/service-instances/vm-1
P=/v1/state/applications/rtvm-orph/service-instances/vm-1/vm-container/exec-interactive
echo "waiting for the guest agent..."
for _ in $(seq 90); do api "$APP" | grep -q '"agent":"connected"' && break; sleep 1; done
api "$APP" | grep -o '"agent":"[a-z]*"'
q() { python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
# a guest command through vm-container/exec, run by the guest's sh (for globs and redirections)
gexec() { api -H 'Accept: application/octet-stream' -d "$(python3 -c 'import json,shlex,sys; print(json.dumps({"cmd": "sh -c " + shlex.quote(sys.argv[1])}))' "$1")" "$APP/vm-container/exec"; }

for delay in ${DELAYS:-$(seq 0 5 150)}; do
    python3 "$COMMON/early-close.py" 127.0.0.1 "$PORT" \
        "$P?cmd=$(q "sh -c 'cat >/tmp/orphan-$delay'")&tty=false" "$TOKEN" v1.exec-interactive.supd "$delay"
    sleep 3
    left=$(gexec 'ps -o pid,args' | grep -v ' ps ' | grep -c "cat$" || true)
    started=$(gexec "ls /tmp/orphan-$delay 2>/dev/null" | grep -c orphan || true)
    echo "client gone after ${delay} ms: command started: $started, still running: $left"
    [ "$left" -gt 0 ] && break
done
gexec 'ps -o pid,args' | grep 'cat$' || true
sleep 3
echo "--- next session (client B): cat, typing three secret lines"
python3 "$COMMON/wsclient.py" "http://127.0.0.1:$PORT$P?cmd=cat&tty=false" "$TOKEN" v1.exec-interactive.supd \
    --send 'secret-1\n' --send 'secret-2\n' --send 'secret-3\n' --close-stdin --pause 1 --wait 8
echo
echo "--- what the orphan captured:"
gexec 'cat /tmp/orphan-*' || true
