#!/usr/bin/env python3
"""TLS client with a small receive buffer: sends one request (Connection: close), waits
DELAY seconds before reading (so that supd's socket buffer and rustls fill up), then reads
slowly to the end and reports how many body bytes arrived and whether close_notify came."""
import os, socket, ssl, sys, time
port, ca, path, delay = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.connect(("127.0.0.1", port))
s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
           % (path, os.environ["TOKEN"])).encode())
time.sleep(delay)
data = b""
clean = "close_notify"
while True:
    try:
        d = s.recv(16384)
    except ssl.SSLEOFError as e:
        clean = "EOF WITHOUT close_notify (%s)" % e
        break
    except OSError as e:
        clean = "error %r" % e
        break
    if not d:
        break
    data += d
    time.sleep(0.002)
head, _, body = data.partition(b"\r\n\r\n")
print(head.decode("latin-1"))
print("body bytes received: %d (the peer sent 16777216, last byte %r)" % (len(body), body[-1:]))
print("end of stream:", clean)
sys.exit(0 if len(body) == 16777216 else 1)
