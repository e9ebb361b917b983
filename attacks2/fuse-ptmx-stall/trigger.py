#!/usr/bin/env python3
"""Sends the exec-interactive (tty=true) upgrade that makes supd resolve dev/pts/ptmx in the
container. Usage: trigger.py HOST PORT TOKEN APP"""
import base64, os, socket, sys
host, port, token, app = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd=sh&tty=true HTTP/1.1\r\n"
           f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v1.exec-interactive.supd\r\n\r\n").encode())
try:
    print("trigger answer:", s.recv(200))
except socket.timeout:
    print("trigger: no answer within 5 s")
