#!/usr/bin/env bash
# Fake agents that answer the sync and then close the connection. A successful sync resets
# the reconnect backoff, so supd forks a helper into the launcher and reconnects every ~0.5 s
# per launcher, forever, with no client. Counts connections and supd's CPU and forks.
source "$(dirname "$0")/../common/lib.sh"
N=${N:-4}
build_supd
static_image rtvm-fakeagent-$$ "$COMMON/fakeagent.c"
start_supd
for i in $(seq "$N"); do
    launcher "$RUN_ID-f$i" rtvm-flap$i rtvm-fakeagent-$$ /fakeagent flap /run/supd-vm/qga.sock
done
sleep 5
t0=$(awk '{print $14+$15}' /proc/$SUPD_PID/stat)
c0=$(docker logs "$RUN_ID-f1" 2>&1 | grep -c client)
g0=$(api "$BASE/rtvm-flap1/service-instances" -o /dev/null -w '%{http_code}')
sleep 20
t1=$(awk '{print $14+$15}' /proc/$SUPD_PID/stat)
c1=$(docker logs "$RUN_ID-f1" 2>&1 | grep -c client)
echo "in 20 s: launcher 1 got $((c1 - c0)) connections (one forked helper each); $N launchers: ~$(( (c1 - c0) * N )) forks"
echo "supd CPU in 20 s: $((t1 - t0)) ticks (of 2000 for one core)"
echo "state: $(api "$BASE/rtvm-flap1/service-instances" | grep -o '"agent":"[a-z]*"')"
