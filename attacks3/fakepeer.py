#!/usr/bin/env python3
"""A hostile peer site: accepts connections on 127.0.0.1:PORT, reads one request head, logs it
to LOGFILE, then answers with the raw bytes of the chosen mode (see MODES)."""
import socket, sys, threading, time

MODES = {
    # an interim answer, then the real one
    "1xx": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfinal answer",
    "102": b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfinal answer",
    # a 101 to a request that asked for no upgrade
    "101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nRAW-TUNNEL-BYTES",
    # 204 with a Content-Length and a body
    "204cl": b"HTTP/1.1 204 No Content\r\nContent-Length: 44\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
    # a large answer: 2 MiB with a Content-Length, and the same ending only where the peer closes
    "big": b"HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n" + b"x" * 16777215 + b"E",
    "bigclose": b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 16777215 + b"E",
    # a 304 whose Content-Length is not a length at all
    "304junk": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 70\r\nContent-Length: -5\r\n\r\n",
    # a chunked answer
    "chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n[\"hi\"\r\n1\r\n]\r\n0\r\n\r\n",
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
}

def serve(conn, mode, log):
    data = b""
    conn.settimeout(5)
    try:
        while b"\r\n\r\n" not in data:
            d = conn.recv(65536)
            if not d:
                break
            data += d
        with open(log, "ab") as f:
            f.write(b"=== request ===\n" + data + b"\n")
        conn.settimeout(None)
        if mode.startswith("ws"):
            # accept the websocket, send KiB of binary frames, then close (a peer that ends)
            import base64, hashlib, re
            key = re.search(rb"(?i)sec-websocket-key: *([^\r]+)", data).group(1).strip()
            acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
            kib = int(mode[2:] or "0")
            frame = b"\x82\x7e\xff\xff" + b"z" * 0xffff
            sent = 0
            conn.settimeout(3)
            try:
                while sent < kib * 1024:
                    conn.sendall(frame); sent += len(frame)
            except OSError:
                pass
            with open(log, "ab") as f:
                f.write(b"=== ws: sent %d bytes of frames, closing\n" % sent)
            conn.close()
            return
        if mode == "slow":
            time.sleep(1.5)
            mode = "ok"
        if mode == "silent":
            time.sleep(3600)
        conn.sendall(MODES[mode])
        time.sleep(1)
    except OSError:
        pass
    finally:
        conn.close()

def main():
    port, mode, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, mode, log), daemon=True).start()

main()
