#!/bin/bash
# Smoke test of supd-test-vm:local (scripts/build-test-vm.sh): boots a launcher container with the
# instance labels and checks everything supd will rely on from the host side, through
# /proc/<launcher pid>/root/run/supd-vm/*: the guest agent (sync, ping, info, exec, osinfo,
# interfaces), the ttyS0 console shell, a shell started on ttyS1 through guest-exec, a TCP server in
# the guest reached from the launcher's network namespace (static and QMP-added forwards),
# docker stop, and the guest's poweroff ending the container. Prints timings.
#
# Needs root (for /proc/<pid>/root and nsenter), docker and python3 on the host.
# SMOKE_KVM=1 passes --device /dev/kvm (the launcher probes it and falls back to TCG).
# SMOKE_SKIP_BUILD=1 uses the existing image as is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${SUPD_TEST_VM_IMAGE:-supd-test-vm:local}
LABEL=supd.test=vm-image-$$

cleanup() {
    ids=$(docker ps -aq --filter "label=$LABEL")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
}
trap cleanup EXIT

if [ "${SMOKE_SKIP_BUILD:-0}" != 1 ]; then
    t0=$(date +%s.%N)
    "$here/build-test-vm.sh"
    echo "timing: build-test-vm.sh $(python3 -c "print(round($(date +%s.%N)-$t0, 1))")s"
fi
echo "timing: image size $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

devs=()
if [ "${SMOKE_KVM:-0}" = 1 ] && [ -c /dev/kvm ]; then devs=(--device /dev/kvm); fi

python3 - "$IMAGE" "$LABEL" "${devs[*]:-}" <<'PY'
import json, os, socket, subprocess, sys, time

IMAGE, LABEL, DEVS = sys.argv[1], sys.argv[2], sys.argv[3].split()
failures = []

def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)

def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()

def run(instance):
    return docker("run", "-d", "--label", LABEL, "--label", "io.supd.application=smoke-app",
                  "--label", "io.supd.service=smoke-svc", "--label", f"io.supd.instance={instance}",
                  "--label", "io.supd.vm-container=true", *DEVS, IMAGE)

def wait_path(path, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False

class Agent:
    """guest agent client: 0xFF-delimited sync, then one JSON reply per line."""
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""

    def _sync_once(self, n, timeout):
        self.s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": n}}).encode() + b"\n")
        end = time.time() + timeout
        self.s.settimeout(0.2)
        while time.time() < end:
            try:
                self.buf += self.s.recv(65536)
            except socket.timeout:
                continue
            # Everything up to the last 0xFF is stale; the reply we want follows it.
            if b"\xff" in self.buf:
                tail = self.buf[self.buf.rindex(b"\xff") + 1:]
                for line in tail.split(b"\n")[:-1]:
                    if json.loads(line).get("return") == n:
                        self.buf = tail[tail.index(line) + len(line) + 1:]
                        return True
        return False

    def sync(self, timeout):
        """Before the guest's qemu-ga runs, bytes queue in the port: resend until one is answered,
        then let the queued requests' replies drain and sync once more."""
        end = time.time() + timeout
        n = int(time.time() * 1000) & 0x7fffffff
        while time.time() < end:
            n += 1
            if self._sync_once(n, 0.5):
                break
        else:
            return False
        time.sleep(0.3)
        return self._sync_once(n + 1000, 10)

    def cmd(self, name, timeout=10, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.settimeout(timeout)
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while b"\n" not in self.buf:
            self.buf += self.s.recv(65536)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def exec(self, argv, capture=True, wait=True):
        r = self.cmd("guest-exec", path=argv[0], arg=argv[1:], **({"capture-output": capture} if capture is not None else {}))
        if "error" in r or not wait:
            return r
        pid = r["return"]["pid"]
        while True:
            st = self.cmd("guest-exec-status", pid=pid)["return"]
            if st["exited"]:
                return st
            time.sleep(0.01)

def expect(sock, data, want, timeout=15):
    sock.settimeout(0.5)
    if data:
        sock.sendall(data)
    got = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        if not d:
            break
        got += d
        if want in got:
            return True, got
    return False, got

# --- boot ------------------------------------------------------------------------------------
t0 = time.time()
cid = run("smoke-1")
pid = docker("inspect", "-f", "{{.State.Pid}}", cid)
run_dir = f"/proc/{pid}/root/run/supd-vm"
check(wait_path(f"{run_dir}/qga.sock", 30), f"{run_dir}/qga.sock appears")
t_sock = time.time() - t0
agent = Agent(f"{run_dir}/qga.sock")
check(agent.sync(180), "guest-sync-delimited answered")
t_agent = time.time() - t0
print(f"timing: docker run -> qga.sock {t_sock:.1f}s, -> agent answers {t_agent:.1f}s")
print("launcher log:", subprocess.run(["docker", "logs", cid], capture_output=True, text=True).stderr.strip().replace("\n", " | "))

# --- agent ---------------------------------------------------------------------------------
check(agent.cmd("guest-ping") == {"return": {}}, "guest-ping")
info = agent.cmd("guest-info")["return"]
enabled = {c["name"] for c in info["supported_commands"] if c["enabled"]}
print(f"qemu-ga version {info['version']}, {len(enabled)} enabled commands")
check({"guest-exec", "guest-exec-status", "guest-get-osinfo", "guest-network-get-interfaces",
       "guest-shutdown"} <= enabled, "guest-info lists exec, osinfo, interfaces, shutdown")
osinfo = agent.cmd("guest-get-osinfo")["return"]
print("guest-get-osinfo:", json.dumps(osinfo))
check(osinfo.get("id") == "supd-test-vm", "guest-get-osinfo id")
ifaces = agent.cmd("guest-network-get-interfaces")["return"]
addrs = {i["name"]: [a["ip-address"] for a in i.get("ip-addresses", [])] for i in ifaces}
print("guest-network-get-interfaces:", addrs)
check("10.0.2.15" in addrs.get("eth0", []), "eth0 has 10.0.2.15")

st = agent.exec(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
import base64
out = base64.b64decode(st.get("out-data", "")).decode()
err = base64.b64decode(st.get("err-data", "")).decode()
check(st["exitcode"] == 3 and out == "out\n" and err == "err\n", f"guest-exec capture-output=true: {st}")
rtts = []
for _ in range(5):
    t = time.time()
    st = agent.exec(["/bin/true"])
    rtts.append(time.time() - t)
print(f"timing: guest-exec+status round trip (/bin/true) min {min(rtts)*1000:.0f} ms, max {max(rtts)*1000:.0f} ms")
t = time.time()
agent.cmd("guest-ping")
print(f"timing: guest-ping round trip {(time.time()-t)*1000:.1f} ms")
merged = agent.cmd("guest-exec", path="/bin/true", arg=[], **{"capture-output": "merged"})
print("guest-exec capture-output=\"merged\":", json.dumps(merged))
if "error" in merged:
    print("note: this qemu-ga does not support merged capture (it arrived in QEMU 8.1)")

# --- console (ttyS0) ---------------------------------------------------------------------------
con = socket.socket(socket.AF_UNIX)
con.connect(f"{run_dir}/console.sock")
ok, got = expect(con, b"\necho CONSOLE-$((6*7)) $(tty)\n", b"CONSOLE-42 /dev/ttyS0")
check(ok, f"console shell answers on ttyS0 ({got[-80:]!r})")
con.close()

# --- ttyS1 through guest-exec --------------------------------------------------------------------
t1 = socket.socket(socket.AF_UNIX)
t1.connect(f"{run_dir}/ttyS1.sock")
r = agent.exec(["/bin/sh", "-c", "exec setsid -c sh <>/dev/ttyS1 >&0 2>&0"], capture=None, wait=False)
check("return" in r, f"guest-exec of a shell on ttyS1: {r}")
ok, got = expect(t1, b"", b"# ")  # the shell's prompt: it has opened the tty
check(ok, f"ttyS1 shell prompt ({got[-80:]!r})")
ok, got = expect(t1, b"stty -echo; echo TTYS1-$((6*7)) $(tty)\n", b"TTYS1-42 /dev/ttyS1")
check(ok, f"ttyS1 shell answers ({got[-80:]!r})")
ok, got = expect(t1, b"echo QGA=$(ps | grep -c qemu-g[a])\n", b"QGA=1")
check(ok, "ps in the ttyS1 shell sees qemu-ga")
t1.close()

# --- TCP into the guest from the launcher's netns ---------------------------------------------
st = agent.exec(["/usr/sbin/httpd", "-p", "8080", "-h", "/srv"])
check(st.get("exitcode") == 0, f"httpd -p 8080 started in the guest ({st})")
qmp = socket.socket(socket.AF_UNIX)
qmp.connect(f"{run_dir}/qmp.sock")
qf = qmp.makefile("rwb")
qf.readline()
def qmp_cmd(**m):
    qf.write(json.dumps(m).encode() + b"\n"); qf.flush()
    while True:
        r = json.loads(qf.readline())
        if "event" not in r:
            return r
qmp_cmd(execute="qmp_capabilities")
r = qmp_cmd(execute="human-monitor-command",
            arguments={"command-line": "hostfwd_add n0 tcp:127.0.0.1:9000-10.0.2.15:9000"})
check(r == {"return": ""}, f"QMP hostfwd_add 127.0.0.1:9000 -> guest :9000 ({r})")
st = agent.exec(["/usr/sbin/httpd", "-p", "9000", "-h", "/srv"])
probe = r'''
import socket, sys
for port in (8080, 9000):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    print(port, data.split(b"\r\n\r\n", 1)[-1].decode().strip())
'''
t = time.time()
out = subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
print(f"timing: two HTTP GETs through slirp hostfwd {(time.time()-t)*1000:.0f} ms")
check(out.stdout.split("\n")[:2] == ["8080 supd test VM", "9000 supd test VM"], f"guest HTTP server reached from the launcher netns: {out.stdout!r} {out.stderr[-200:]!r}")

# --- docker stop -----------------------------------------------------------------------------------
t = time.time()
docker("stop", "-t", "10", cid)
t_stop = time.time() - t
code = docker("inspect", "-f", "{{.State.ExitCode}}", cid)
logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True).stderr.strip().replace("\n", " | ")
print(f"timing: docker stop {t_stop:.1f}s (exit code {code}); log: {logs}")
check(t_stop < 10 and code == "0", "docker stop ends the launcher before the stop timeout, exit 0")

# --- guest poweroff ends the container -------------------------------------------------------------
cid2 = run("smoke-2")
pid2 = docker("inspect", "-f", "{{.State.Pid}}", cid2)
check(wait_path(f"/proc/{pid2}/root/run/supd-vm/qga.sock", 30), "second launcher's qga.sock appears")
a2 = Agent(f"/proc/{pid2}/root/run/supd-vm/qga.sock")
check(a2.sync(180), "second guest agent answers")
a2.exec(["/sbin/poweroff"], capture=None, wait=False)
t = time.time()
while docker("inspect", "-f", "{{.State.Running}}", cid2) == "true" and time.time() - t < 30:
    time.sleep(0.1)
code = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid2)
print(f"timing: guest poweroff -> container exit {time.time()-t:.1f}s ({code})")
check(code == "false 0", "guest poweroff ends the container with exit 0")

print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
sys.exit(1 if failures else 0)
PY
