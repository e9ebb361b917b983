"""Tiny raw HTTP/websocket client helpers for the attack reproductions (stdlib only)."""
import base64, os, socket, struct, time, json

HOST = os.environ.get("SUPD_HOST", "127.0.0.1")
PORT = int(os.environ.get("SUPD_PORT", "47811"))
ADMIN = os.environ.get("SUPD_ADMIN", "A" * 40)
READER = os.environ.get("SUPD_READER", "R" * 40)
OTHER = os.environ.get("SUPD_OTHER", "O" * 40)
BASE = "/v1/state/applications/%s/service-instances"

def conn(timeout=10):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def recv_response(s, limit=1 << 24):
    """Read one HTTP response (Content-Length or close framed). Returns (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return None, {}, buf
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(rest) < n:
            d = s.recv(65536)
            if not d:
                break
            rest += d
        return status, hdrs, rest[:n]
    return status, hdrs, rest

def get(path, token=ADMIN, extra=""):
    s = conn()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%sConnection: close\r\n\r\n" % (path, token, extra)).encode())
    r = recv_response(s)
    s.close()
    return r

def ws_open(path, proto, token=ADMIN, timeout=10):
    s = conn(timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n" % (path, token, key, proto)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1)
        if not d:
            break
        buf += d
    status = int(buf.split()[1]) if buf else None
    return s, status, buf

def frame(opcode, payload, fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        h = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        h = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        h = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return h + payload
    m = os.urandom(4)
    return h + m + bytes(c ^ m[i % 4] for i, c in enumerate(payload)) if n < 4096 else h + m + _xor(payload, m)

def _xor(p, m):
    k = (m * (len(p) // 4 + 1))[: len(p)]
    return (int.from_bytes(p, "big") ^ int.from_bytes(k, "big")).to_bytes(len(p), "big")

def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS"):
            return int(l.split()[1])

def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))

def probe_latency(path=None, token=ADMIN):
    path = path or (BASE % "myapp") + "?count=true"
    t = time.time()
    try:
        st, _, body = get(path, token)
    except Exception as e:
        return None, repr(e)
    return time.time() - t, st
