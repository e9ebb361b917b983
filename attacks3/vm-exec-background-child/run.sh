#!/usr/bin/env bash
# vm-container/exec of a command that leaves a background child holding its output: the
# guest agent reports exited:false until the output pipes close, so the answer never comes,
# and a client that gives up leaves supd polling for it forever (SIGTERM/SIGKILL go to the
# main pid only, which is already gone). Enough of them fill the VM's agent queue: every other
# client's command on that VM is refused.
source "$(dirname "$0")/../common/lib.sh"
N=${N:-70}
build_supd
start_supd
launcher "$RUN_ID-vm" rtvm-bg -e SUPD_VM_ACCEL=tcg supd-test-vm:local
APP=$BASE/rtvm-bg/service-instances/vm-1
echo "waiting for the guest agent..."
for _ in $(seq 90); do api "$APP" | grep -q '"agent":"connected"' && break; sleep 1; done
api "$APP" | grep -o '"agent":"[a-z]*"'
t() { local s e; s=$(date +%s%N); "$@" || true; e=$(date +%s%N); echo " ($(( (e - s) / 1000000 )) ms)"; }
echo -n "exec 'sh -c \"sleep 600 >/dev/null 2>&1 & echo started\"': "
t api -m 15 -w ' %{http_code}' -d '{"cmd":"sh -c \"sleep 600 >/dev/null 2>&1 & echo started\""}' "$APP/vm-container/exec"
echo -n "exec 'sh -c \"sleep 600 & echo started\"' (client gives up after 15 s): "
t api -m 15 -w ' %{http_code}' -d '{"cmd":"sh -c \"sleep 600 & echo started\""}' "$APP/vm-container/exec"
echo "$N more such clients, each giving up after 3 s..."
pids=()
for _ in $(seq "$N"); do
    api -m 3 -o /dev/null -d '{"cmd":"sh -c \"sleep 600 & echo started\""}' "$APP/vm-container/exec" & pids+=($!)
done
wait "${pids[@]}" || true
sleep 5
for i in 1 2 3; do
    echo -n "another client's exec 'echo hi': "
    t api -m 15 -w ' %{http_code}' -d '{"cmd":"echo hi"}' "$APP/vm-container/exec"
    sleep 10
done
c0=$(awk '{print $14+$15}' /proc/$SUPD_PID/stat); sleep 10; c1=$(awk '{print $14+$15}' /proc/$SUPD_PID/stat)
echo "supd CPU in 10 s with every client gone: $((c1 - c0)) ticks; open connections to supd: $(ss -tn state established "( sport = :$PORT )" | tail -n +2 | wc -l)"
echo "guest sleeps left: $(api -H 'Accept: application/octet-stream' -d '{"cmd":"ps"}' "$APP/vm-container/exec" | grep -c 'sleep 600' || true)"
