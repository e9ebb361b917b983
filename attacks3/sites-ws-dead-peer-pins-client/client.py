#!/usr/bin/env python3
"""Open a forwarded websocket through supd A and never read a byte (small receive buffer).
Keeps the socket open for SECS seconds and prints its local port first."""
import os, socket, sys, time
port, path, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
print(s.getsockname()[1], flush=True)
s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v1.connect.supd\r\n\r\n"
           % (path, os.environ["TOKEN"])).encode())
time.sleep(secs)
