#!/usr/bin/env python3
"""A minimal websocket client for supd's v1.exec-interactive.supd / v1.console.supd.

wsclient.py URL TOKEN PROTOCOL [--send TEXT]... [--wait S] [--close-stdin]
Prints the HTTP status, then everything received (output frames raw, the close code and
reason on a last line "CLOSE code reason"). Each --send is sent as one stdin frame (0x10+bytes
for exec-interactive, raw for the console), after --pause seconds."""
import base64, os, select, socket, struct, sys, time, urllib.parse

args = sys.argv[1:]
url, token, proto = args[0], args[1], args[2]
sends, wait, pause, close_stdin = [], 5.0, 0.5, False
i = 3
while i < len(args):
    if args[i] == "--send":
        sends.append(args[i + 1].encode().decode("unicode_escape").encode("latin-1")); i += 2
    elif args[i] == "--wait":
        wait = float(args[i + 1]); i += 2
    elif args[i] == "--pause":
        pause = float(args[i + 1]); i += 2
    elif args[i] == "--close-stdin":
        close_stdin = True; i += 1
    else:
        sys.exit("bad argument " + args[i])
u = urllib.parse.urlsplit(url)
s = socket.create_connection((u.hostname, u.port))
key = base64.b64encode(os.urandom(16)).decode()
path = u.path + ("?" + u.query if u.query else "")
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}\r\nAuthorization: Bearer {token}\r\n"
           f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(65536)
    if not d:
        break
    buf += d
head, _, buf = buf.partition(b"\r\n\r\n")
status = head.split(b" ")[1].decode() if head else "none"
print("STATUS", status, flush=True)
if status != "101":
    print(buf.decode(errors="replace"))
    sys.exit(0)
interactive = proto.startswith("v1.exec-interactive")


def frame(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | op])
    if n < 126:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return hdr + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(payload))


out = sys.stdout.buffer
deadline = time.time() + wait
next_send = time.time() + pause
closed = False
while time.time() < deadline and not closed:
    if sends and time.time() >= next_send:
        data = sends.pop(0)
        s.sendall(frame(2, (b"\x10" + data) if interactive else data))
        next_send = time.time() + pause
        if not sends and close_stdin:
            s.sendall(frame(2, b"\x12"))
    r, _, _ = select.select([s], [], [], 0.05)
    if r:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4: break
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10: break
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        payload, buf = buf[off:off + n], buf[off + n:]
        if op == 8:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 0
            out.write(b"\nCLOSE %d %s\n" % (code, payload[2:]))
            s.sendall(frame(8, payload[:2]))
            closed = True
            break
        elif op == 9:
            s.sendall(frame(10, payload))
        elif op in (1, 2, 0):
            out.write(payload)
        out.flush()
s.close()
