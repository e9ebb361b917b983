#!/usr/bin/env python3
"""A read-only token (or one limited to another application) fills every connection slot
with idle keep-alive connections; the admin is refused with 503 until they time out.
Usage: SUPD_PORT=47811 SUPD_READER=<read-only token> SUPD_ADMIN=<admin token> run.py [N]"""
import sys, os, time, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1100
path = supdc.BASE % os.environ.get("APP", "myapp") + "?count=true"
TOK = os.environ.get("TOKEN", supdc.READER)
ADMIN_PATH = supdc.BASE % "myapp" + "?count=true"
held = []
for i in range(N):
    try:
        s = supdc.conn(5)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, TOK)).encode())
        st, h, b = supdc.recv_response(s)
        if st != 200:
            print("connection", i, "got", st, b[:100]); s.close(); break
        held.append(s)
    except Exception as e:
        print("connection", i, "failed", e); break
print("holding", len(held), "authenticated idle keep-alive connections (token: " + os.environ.get("TOKEN", "reader") [:6] + "...)")
t = time.time()
try:
    print("admin request:", supdc.get(ADMIN_PATH, supdc.ADMIN)[0::2], "in %.3fs" % (time.time() - t))
except Exception as e:
    print("admin request failed:", e)
# keep them alive for a while: one cheap request every 30 s keeps the idle timer from firing
end = time.time() + float(os.environ.get("HOLD", "0"))
while time.time() < end:
    time.sleep(30)
    for s in held:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, TOK)).encode())
        supdc.recv_response(s)
    print("refreshed; admin:", supdc.get(ADMIN_PATH, supdc.ADMIN)[0::2])
for s in held:
    s.close()
