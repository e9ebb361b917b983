#!/usr/bin/env python3
"""Well-behaved client for DURATION seconds: a fresh connection per state GET every 50 ms;
prints every request slower than 100 ms and a summary."""
import sys, os, time
sys.path.insert(0, os.path.dirname(__file__))
import supdc
DUR = float(sys.argv[1]) if len(sys.argv) > 1 else 20
path = supdc.BASE % "myapp" + "?count=true"
lat = []; t0 = time.time()
while time.time() - t0 < DUR:
    t = time.time()
    try:
        st = supdc.get(path, supdc.ADMIN)[0]
    except Exception as e:
        st = repr(e)
    d = (time.time() - t) * 1000
    lat.append(d)
    if d > 100 or st != 200:
        print("  [probe t=%.1fs] %s in %.0f ms" % (t - t0, st, d), flush=True)
    time.sleep(0.05)
lat.sort()
print("probe: n=%d p50=%.1f p99=%.1f max=%.1f ms" % (len(lat), lat[len(lat)//2], lat[int(len(lat)*.99)], lat[-1]))
