#!/usr/bin/env bash
# What held: socket paths that lead outside the launcher's tree or are not sockets. Each
# launcher prepares its trick and declares the agent path; supd must refuse to connect
# (and must not reach the host's Docker socket, which would answer an HTTP 400 to JSON).
source "$(dirname "$0")/../common/lib.sh"
build_supd
start_supd
n=0
trick() { # DESCRIPTION AGENT-PATH SHELL-SETUP
    n=$((n + 1))
    launcher "$RUN_ID-p$n" rtvm-path$n --label "io.supd.vm.agent=$2" supd-test-busybox:latest \
        sh -c "mkdir -p /run/supd-vm; $3; sleep 3600"
    DESC[$n]=$1
}
trick "symlink to the host's docker socket path" /run/supd-vm/qga.sock "ln -s /var/run/docker.sock /run/supd-vm/qga.sock"
trick "relative symlink climbing out" /run/supd-vm/qga.sock "ln -s ../../../../../../var/run/docker.sock /run/supd-vm/qga.sock"
trick "directory symlink" /run/supd-vm/qga.sock "rmdir /run/supd-vm; ln -s /var/run /run/supd-vm"
trick "magic link /proc/1/root" /proc/1/root/var/run/docker.sock "true"
trick "magic link /proc/self/cwd" /proc/self/cwd/qga.sock "true"
trick "FIFO" /run/supd-vm/qga.sock "mkfifo /run/supd-vm/qga.sock"
trick "directory" /run/supd-vm/qga.sock "mkdir /run/supd-vm/qga.sock"
trick "character device" /run/supd-vm/qga.sock "mknod /run/supd-vm/qga.sock c 1 3"
trick "regular file" /run/supd-vm/qga.sock "touch /run/supd-vm/qga.sock"
wait_mirror 3
for i in $(seq "$n"); do
    printf '%-42s ' "${DESC[$i]}:"
    api -d '{"cmd":"true"}' "$BASE/rtvm-path$i/service-instances/vm-1/vm-container/exec" -w " %{http_code}\n"
done
