#!/usr/bin/env python3
"""Send a websocket upgrade request and close the connection DELAY ms later, before reading
anything (a client that gives up, or whose network drops, while supd prepares the session).
early-close.py HOST PORT PATH TOKEN PROTOCOL DELAY_MS"""
import socket, sys, time
host, port, path, token, proto, delay = sys.argv[1:7]
s = socket.create_connection((host, int(port)))
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
           "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           f"Sec-WebSocket-Protocol: {proto}\r\n\r\n").encode())
time.sleep(int(delay) / 1000)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
s.close()
