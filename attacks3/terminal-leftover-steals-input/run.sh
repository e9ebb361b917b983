#!/usr/bin/env bash
# Session 1 on the VM's terminal port (exec-interactive) leaves a background process reading
# /dev/ttyS1 and exits normally; supd frees the port. Session 2 (another client) gets the same
# port: what it types goes (partly or wholly) to session 1's leftover, which also writes into
# session 2's output.
source "$(dirname "$0")/../common/lib.sh"
build_supd
start_supd
launcher "$RUN_ID-vm" rtvm-term -e SUPD_VM_ACCEL=tcg supd-test-vm:local
APP=$BASE/rtvm-term/service-instances/vm-1
echo "waiting for the guest agent..."
for _ in $(seq 90); do
    api "$APP" | grep -q '"agent":"connected"' && break
    sleep 1
done
api "$APP" | grep -o '"agent":"[a-z]*"'
WS=${APP/http:/ws:}
q() { python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }

echo "--- session 1 (client A): leaves a reader on its terminal and exits 0"
S1="sh -c 'setsid sh -c \"sleep 4; cat /dev/ttyS1 >/tmp/stolen\" </dev/null >/dev/null 2>&1 & sleep 1; echo A-done'"
python3 "$COMMON/wsclient.py" "http://127.0.0.1:$PORT${APP#http://127.0.0.1:$PORT}/vm-container/exec-interactive?cmd=$(q "$S1")&tty=false" \
    "$TOKEN" v1.exec-interactive.supd --wait 10
echo
# supd keeps the port a few seconds after the session (close handshake); then it is free.
sleep 10
echo "--- guest processes between the sessions (session 1 is over, its port free):"
api -H "Accept: application/octet-stream" -d "{\"cmd\":\"ps\"}" "$APP/vm-container/exec" | grep ttyS1
echo "--- session 2 (client B): runs cat and types three secret lines"
S2="cat"
python3 "$COMMON/wsclient.py" "http://127.0.0.1:$PORT${APP#http://127.0.0.1:$PORT}/vm-container/exec-interactive?cmd=$(q "$S2")&tty=false" \
    "$TOKEN" v1.exec-interactive.supd --send 'secret-1\n' --send 'secret-2\n' --send 'secret-3\n' \
    --close-stdin --pause 1 --wait 8
echo
echo "--- what session 1's leftover captured (vm-container/exec cat /tmp/stolen):"
api -H 'Accept: application/octet-stream' -d '{"cmd":"cat /tmp/stolen"}' "$APP/vm-container/exec"
echo "--- guest processes on ttyS1 after session 2 (its end hung the port up):"
api -H "Accept: application/octet-stream" -d "{\"cmd\":\"ps\"}" "$APP/vm-container/exec" | grep ttyS1 || echo "(none)"
