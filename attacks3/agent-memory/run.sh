#!/usr/bin/env bash
# Idle fake agents that each send one 4 MiB line with no newline after their first sync and
# then just answer syncs: supd keeps a line buffer of up to max_line (~2.7 MiB with the default
# 1 MiB output cap) per agent, and keeps its capacity after the line is dropped. Nothing bounds
# the total: memory grows linearly with launchers (hidden ones included) and stays.
# systemd/supd.service has MemoryHigh=128M, MemoryMax=256M.
source "$(dirname "$0")/../common/lib.sh"
N=${N:-20}
build_supd
static_image rtvm-fakeagent-$$ "$COMMON/fakeagent.c"
start_supd
sleep 2
rss() { awk '/VmRSS/{print $2}' /proc/$SUPD_PID/status; }
r0=$(rss)
echo "supd RSS before: $r0 kB"
for i in $(seq "$N"); do
    launcher "$RUN_ID-m$i" rtvm-mem$i rtvm-fakeagent-$$ /fakeagent fill /run/supd-vm/qga.sock
done
sleep 15
r1=$(rss)
echo "supd RSS with $N idle launchers: $r1 kB (+$(( (r1 - r0) / N )) kB per launcher)"
sleep 15
r2=$(rss); echo "15 s later (agents idle, answering syncs): $r2 kB"
echo "agents: $(for i in $(seq "$N"); do api "$BASE/rtvm-mem$i/service-instances" | grep -o '"agent":"[a-z]*"'; done | sort | uniq -c | tr '\n' ' ')"
echo "at this rate MemoryMax=256M is reached with ~$(( (262144 - r0) * N / (r1 - r0) )) launchers"
