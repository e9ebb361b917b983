#!/usr/bin/env python3
"""Memory held per exec answer that the client never reads. Output of NUL bytes is escaped
as \\u0000 in JSON (6 bytes each), so the 1 MiB output cap becomes a ~6 MiB answer.
Usage: SUPD_PID=<pid> APP=otherapp SI=db-1 C=db TOKEN=<token with exec on APP> run.py N"""
import sys, os, time, json, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
pid = int(os.environ["SUPD_PID"])
app, si, c = os.environ.get("APP", "otherapp"), os.environ.get("SI", "db-1"), os.environ.get("C", "db")
tok = os.environ.get("TOKEN", supdc.OTHER)
cmd = os.environ.get("CMD", "head -c 1048576 /dev/zero")
path = supdc.BASE % app + "/%s/containers/%s/exec" % (si, c)
body = json.dumps({"cmd": cmd}).encode()
base = supdc.rss(pid)
print("supd RSS before: %d KiB, fds %d" % (base, supdc.nfds(pid)))
socks = []
for i in range(N):
    s = supdc.conn()
    s.setsockopt(supdc.socket.SOL_SOCKET, supdc.socket.SO_RCVBUF, 4096)
    s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
               "Accept: %s\r\nContent-Length: %d\r\n\r\n" % (path, tok, os.environ.get("ACCEPT", "application/json"), len(body))).encode() + body)
    socks.append(s)  # never read
time.sleep(float(os.environ.get("WAIT", "8")))
r = supdc.rss(pid)
print("execs %d; supd RSS after: %d KiB (+%d KiB, %.0f KiB per exec), fds %d"
      % (len(socks), r, r - base, (r - base) / max(1, len(socks)), supdc.nfds(pid)))
print("concurrent client latency:", supdc.probe_latency())
for i in range(int(os.environ.get("WATCH", "0")) // 10):
    time.sleep(10)
    print("  t+%ds: RSS %d KiB, fds %d" % (10 * (i + 1), supdc.rss(pid), supdc.nfds(pid)))
for s in socks:
    s.close()
