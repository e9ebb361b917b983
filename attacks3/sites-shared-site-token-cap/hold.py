#!/usr/bin/env python3
"""Open N forwarded exec-interactive websockets through supd A and hold them; print each
handshake's status line. Runs until killed."""
import os, socket, sys, time
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Protocol: v1.exec-interactive.supd\r\n\r\n" % (path, os.environ["TOKEN"])).encode())
    s.settimeout(10)
    head = s.recv(4096).split(b"\r\n")[0].decode()
    print("mallory session %d: %s" % (i + 1, head), flush=True)
    socks.append(s)
time.sleep(3600)
