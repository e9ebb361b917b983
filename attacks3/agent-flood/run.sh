#!/usr/bin/env bash
# Fake guest agents that answer the sync and then flood (MODE=flood: endless bytes, no newline;
# MODE=lines: endless short JSON lines). Measures what the flood costs other clients: the
# latency of a state request and of an exec into an ordinary container of another
# application, and supd's CPU and memory.
source "$(dirname "$0")/../common/lib.sh"
MODE=${MODE:-flood}
N=${N:-4}
build_supd
static_image rtvm-fakeagent-$$ "$COMMON/fakeagent.c"
start_supd
docker run -d --name "$RUN_ID-victim" --label "$LABEL" --label io.supd.application=rtvm-victim \
    --label io.supd.service=web --label io.supd.instance=1 supd-test-busybox:latest sleep 3600 >/dev/null
CONTAINERS+=("$RUN_ID-victim")
wait_mirror 2
measure() {
    local s e
    s=$(date +%s%N)
    api -o /dev/null "$BASE/rtvm-victim/service-instances"
    e=$(date +%s%N); echo -n "state $(( (e - s) / 1000000 )) ms, "
    s=$(date +%s%N)
    api -o /dev/null -d '{"cmd":"true"}' "$BASE/rtvm-victim/service-instances/web-1/containers/web/exec"
    e=$(date +%s%N); echo -n "exec $(( (e - s) / 1000000 )) ms, "
    echo "supd RSS $(awk '/VmRSS/{print $2}' /proc/$SUPD_PID/status) kB, CPU ticks $(awk '{print $14+$15}' /proc/$SUPD_PID/stat)"
}
echo "before: $(measure)"
for i in $(seq "$N"); do
    launcher "$RUN_ID-a$i" rtvm-flood$i rtvm-fakeagent-$$ /fakeagent "$MODE" /run/supd-vm/qga.sock
done
sleep 5
for i in 1 2 3; do echo "flooding ($N agents, $MODE): $(measure)"; sleep 2; done
api "$BASE/rtvm-flood1/service-instances" | grep -o '"agent":"[a-z]*"'
