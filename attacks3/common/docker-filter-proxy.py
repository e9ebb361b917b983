#!/usr/bin/env python3
"""A Docker socket proxy that shows supd only the containers labelled supd.test=redteam-vm.

Other helpers run VM launchers on the same engine; a supd that saw them would connect to
their guest agents (which serve one client each) and disturb their tests. The proxy rewrites
the list and events requests supd sends so they carry a label filter; everything else passes.
Usage: docker-filter-proxy.py LISTEN_PATH [UPSTREAM]"""
import os, socket, sys, threading, urllib.parse

listen = sys.argv[1]
upstream = sys.argv[2] if len(sys.argv) > 2 else "/var/run/docker.sock"
LABEL = "supd.test=redteam-vm"
LIST_F = urllib.parse.quote('{"label":["%s"]}' % LABEL).encode()
EV_OLD = b"%7B%22type%22%3A%5B%22container%22%5D%7D"
EV_NEW = urllib.parse.quote('{"type":["container"],"label":["%s"]}' % LABEL).encode()


def rewrite(b):
    b = b.replace(b"containers/json?all=1", b"containers/json?all=1&filters=" + LIST_F)
    return b.replace(EV_OLD, EV_NEW)


def pipe(a, b, fn=None):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(fn(d) if fn else d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(c):
    u = socket.socket(socket.AF_UNIX)
    u.connect(upstream)
    threading.Thread(target=pipe, args=(c, u, rewrite), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()


if os.path.exists(listen):
    os.unlink(listen)
s = socket.socket(socket.AF_UNIX)
s.bind(listen)
s.listen(64)
while True:
    c, _ = s.accept()
    serve(c)
