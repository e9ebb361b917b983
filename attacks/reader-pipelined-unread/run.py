#!/usr/bin/env python3
"""A read-only token pipelines state GETs on many connections and never reads the answers:
each connection pins up to MAX_PENDING_OUTPUT (1 MiB) of answers in supd.
Usage: SUPD_PID=<pid> SUPD_READER=<read-only token> run.py [N]"""
import sys, os, time, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
pid = int(os.environ["SUPD_PID"])
app = os.environ.get("APP", "myapp")
req = ("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (supdc.BASE % app, supdc.READER)).encode()
base = supdc.rss(pid)
print("supd RSS before: %d KiB, fds %d" % (base, supdc.nfds(pid)))
socks = []
for j in range(N):
    s = supdc.conn()
    s.setsockopt(supdc.socket.SOL_SOCKET, supdc.socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    pend = req * 8000
    dl = time.time() + 0.3
    while pend and time.time() < dl:
        try:
            n = s.send(pend); pend = pend[n:]
        except BlockingIOError:
            time.sleep(0.005)
    socks.append(s)
time.sleep(2)
r = supdc.rss(pid)
print("connections %d; supd RSS after: %d KiB (+%d KiB, %.0f KiB per connection), fds %d"
      % (len(socks), r, r - base, (r - base) / len(socks), supdc.nfds(pid)))
try:
    print("concurrent client latency:", supdc.probe_latency())
except OSError as e:
    print("concurrent client:", e)
for s in socks:
    s.close()
