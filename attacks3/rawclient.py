#!/usr/bin/env python3
"""Send raw bytes (argv[3], with \\r\\n escapes and {TOKEN} substituted from env TOKEN) to
127.0.0.1:PORT, print everything received for SECS seconds (or until close)."""
import os, socket, sys, time
port, secs, raw = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
raw = raw.replace("{TOKEN}", os.environ.get("TOKEN", "")).encode().decode("unicode_escape").encode("latin-1")
s = socket.create_connection(("127.0.0.1", port))
s.sendall(raw)
s.settimeout(0.3)
out = b""
end = time.time() + secs
while time.time() < end:
    try:
        d = s.recv(65536)
        if not d:
            out += b"<<EOF>>"
            break
        out += d
    except socket.timeout:
        pass
sys.stdout.write(out.decode("latin-1"))
