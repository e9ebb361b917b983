#!/usr/bin/env python3
"""Each exec-interactive session sends an unfinished fragmented message just under
max-message (1 MiB) and stays: supd holds the partial message in memory.
Usage: SUPD_PID=<pid> APP=otherapp SI=db-1 C=db TOKEN=<token with exec on APP> run.py N"""
import sys, os, time, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
pid = int(os.environ["SUPD_PID"])
app, si, c = os.environ.get("APP", "otherapp"), os.environ.get("SI", "db-1"), os.environ.get("C", "db")
tok = os.environ.get("TOKEN", supdc.OTHER)
path = supdc.BASE % app + "/%s/containers/%s/exec-interactive?cmd=sleep%%201000&tty=false" % (si, c)
FR = 256 * 1024 - 16
frags = supdc.frame(2, b"\x10" + os.urandom(FR - 1), fin=False) + b"".join(
    supdc.frame(0, os.urandom(FR), fin=False) for _ in range(3))
base = supdc.rss(pid)
print("supd RSS before: %d KiB, fds %d" % (base, supdc.nfds(pid)))
socks = []
for i in range(N):
    s, st, _ = supdc.ws_open(path, "v1.exec-interactive.supd", tok)
    if st != 101:
        print("session", i, "status", st); break
    s.sendall(frags)
    socks.append(s)
time.sleep(2)
r = supdc.rss(pid)
print("sessions %d; supd RSS after: %d KiB (+%d KiB, %.0f KiB per session), fds %d"
      % (len(socks), r, r - base, (r - base) / max(1, len(socks)), supdc.nfds(pid)))
# keep them: a pong (allowed between fragments) every 10 s answers supd's pings
HOLD = float(os.environ.get("HOLD", "0"))
t0 = time.time()
while time.time() - t0 < HOLD:
    time.sleep(10)
    for s in socks:
        s.sendall(supdc.frame(10, b""))
    print("  t+%ds: RSS %d KiB, fds %d" % (time.time() - t0, supdc.rss(pid), supdc.nfds(pid)))
for s in socks:
    s.close()
