#!/usr/bin/env python3
"""Well-behaved client: N state GETs on one keep-alive connection, prints max/p50/p99 (ms)."""
import sys, os, time
sys.path.insert(0, os.path.dirname(__file__))
import supdc
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
path = supdc.BASE % "myapp" + "?count=true"
s = supdc.conn()
lat = []
for i in range(N):
    t = time.time()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, supdc.ADMIN)).encode())
    st, h, b = supdc.recv_response(s)
    lat.append((time.time() - t) * 1000)
    if st != 200:
        print("status", st, b); break
    time.sleep(0.01)
lat.sort()
print("latency ms: n=%d p50=%.2f p99=%.2f max=%.2f" % (len(lat), lat[len(lat)//2], lat[int(len(lat)*.99)], lat[-1]))
