#!/usr/bin/env bash
# A launcher with a FUSE file system at /run/supd-vm that never answers a lookup: every helper
# supd forks to connect to a socket there stays in uninterruptible sleep forever (SIGKILL cannot
# end it once the FUSE daemon has read the request). Nothing bounds how many: console requests
# with takeover=true start one each, and the agent's watch starts one every <=30 s with no
# client at all. supd's tasks are capped (TasksMax=2048 in systemd/supd.service; here a pids
# cgroup with pids.max=$LIMIT stands in), so once the stuck helpers fill it supd cannot fork:
# exec into an unrelated container of another application fails.
source "$(dirname "$0")/../common/lib.sh"
LIMIT=${LIMIT:-60}
build_supd
static_image rtvm-fusehang-$$ "$COMMON/fusehang.c"
start_supd

CG=/sys/fs/cgroup/pids/$RUN_ID
mkdir "$CG"
echo "$LIMIT" >"$CG/pids.max"
echo "$SUPD_PID" >"$CG/cgroup.procs"
EXTRA_CLEANUP="docker rm -f ${RUN_ID}-fuse >/dev/null 2>&1; sleep 2; rmdir $CG 2>/dev/null"

# The hostile launcher: mounts a FUSE file system over /run/supd-vm that never answers.
launcher "$RUN_ID-fuse" rtvm-fuse --device /dev/fuse --cap-add SYS_ADMIN \
    --security-opt apparmor=unconfined rtvm-fusehang-$$ /fusehang /run/supd-vm
# A victim: an ordinary container of another application.
docker run -d --name "$RUN_ID-victim" --label "$LABEL" --label io.supd.application=rtvm-victim \
    --label io.supd.service=web --label io.supd.instance=1 supd-test-busybox:latest sleep 3600 >/dev/null
CONTAINERS+=("$RUN_ID-victim")
wait_mirror 3

exec_victim() {
    api -o /dev/null -w "%{http_code}" -d '{"cmd":"echo hi"}' \
        "$BASE/rtvm-victim/service-instances/web-1/containers/web/exec"
}
echo "victim exec before: $(exec_victim)  (expected 200)"
echo "supd tasks: $(cat "$CG/pids.current") of $LIMIT"

URL="$BASE/rtvm-fuse/service-instances/vm-1/vm-container/console?takeover=true"
for round in 1 2; do
    pids=()
    for _ in $(seq 40); do ws_status "$URL" v1.console.supd >/dev/null & pids+=($!); done
    wait "${pids[@]}"
    echo "after round $round of 40 console requests: supd tasks $(cat "$CG/pids.current") of $LIMIT," \
        "stuck helpers (D state): $(stuck_helpers)"
done
echo "victim exec after: $(exec_victim)  (expected 200; a 5xx means supd can no longer fork)"
api -d '{"cmd":"echo hi"}' "$BASE/rtvm-victim/service-instances/web-1/containers/web/exec"; echo
grep -i "fork\|resource temporarily" "$WORK/supd.log" | tail -3
