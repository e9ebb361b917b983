#!/usr/bin/env python3
"""A DNS server that reads queries and never answers (a slow or attacked resolver)."""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(sys.argv[1], "w").write("ready\n")
while True:
    s.recvfrom(4096)
