#!/usr/bin/env python3
"""Memory held per connect session with a target that never reads.
Needs a container of an application the token may `connect` to, with a TCP server on PORT
that accepts and never reads (busybox: nc -ll -p 9000 -e sleep 100000).
Usage: SUPD_PID=<pid> APP=otherapp SI=db-1 PORT=9000 SUPD_OTHER=<token> run.py N"""
import sys, os, time, socket, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
pid = int(os.environ["SUPD_PID"])
app, si, port = os.environ.get("APP", "otherapp"), os.environ.get("SI", "db-1"), os.environ.get("PORT", "9000")
tok = os.environ.get("TOKEN", supdc.OTHER)
path = supdc.BASE % app + "/%s/connect?protocol=tcp&port=%s" % (si, port)
base = supdc.rss(pid)
print("supd RSS before: %d KiB, fds %d" % (base, supdc.nfds(pid)))
FR = 256 * 1024 - 16
# one 1 MiB message in four frames (max-frame 256 KiB, max-message 1 MiB)
msg = b"".join(supdc.frame(2 if i == 0 else 0, os.urandom(FR), fin=(i == 3)) for i in range(4))
socks = []
for i in range(N):
    s, st, _ = supdc.ws_open(path, "v1.connect.supd", tok)
    if st != 101:
        print("session", i, "status", st); break
    s.setblocking(False)
    socks.append(s)
    # whole messages until supd stops reading (the target never reads)
    pend = b"".join([msg] * 6)
    deadline = time.time() + float(os.environ.get("PER", "0.5"))
    while pend and time.time() < deadline:
        try:
            n = s.send(pend); pend = pend[n:]
        except BlockingIOError:
            time.sleep(0.01)
        except OSError as e:
            print("session", i, e); break
time.sleep(2)
r = supdc.rss(pid)
print("sessions %d; supd RSS after: %d KiB (+%d KiB, %.0f KiB per session), fds %d"
      % (len(socks), r, r - base, (r - base) / max(1, len(socks)), supdc.nfds(pid)))
print("concurrent client latency:", supdc.probe_latency())
for i in range(int(os.environ.get("WATCH", "5"))):
    time.sleep(1)
    print("  t+%ds: RSS %d KiB, fds %d" % (i + 1, supdc.rss(pid), supdc.nfds(pid)))
for s in socks:
    s.close()
