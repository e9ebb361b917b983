#!/bin/sh
# Runs the attack with N connections while a well-behaved admin client probes latency.
# Usage: SUPD_PID=<pid> SUPD_READER=... SUPD_ADMIN=... ./run_with_probe.sh [N]
D=$(dirname "$0")
N=${1:-300}
python3 "$D/../lib/latency_bg.py" 40 > /tmp/supd-probe.$$ 2>&1 &
PROBE=$!
sleep 1
python3 "$D/run.py" "$N"
wait $PROBE
cat /tmp/supd-probe.$$; rm -f /tmp/supd-probe.$$
