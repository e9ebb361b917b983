#!/usr/bin/env python3
"""An independent websocket client for supd's exec-interactive and connect endpoints.

Uses the `websockets` library's sync client with its defaults (strict RFC 6455 checks: masked
frames, UTF-8, close codes, handshake validation; nothing is relaxed) against a live supd, and
asserts byte-exact results. Run by scripts/api-check.sh, which starts supd and the container:
an instance `<application>/<instance>` whose container `<container>` serves a TCP echo on
port 7 (`nc -ll -p 7 -e cat`) and a byte counter on port 8 (`nc -ll -p 8 -e wc -c`). The UDP
echo is served by a thread of this process that entered the container's network namespace
(busybox's nc has no UDP). Exits non-zero on the first mismatch.
"""

import argparse
import ctypes
import json
import os
import socket
import ssl
import sys
import threading
import urllib.parse

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

EXEC = "v1.exec-interactive.supd"
CONNECT = "v1.connect.supd"
TCP_CONNECT = "v1.tcp-connect.supd"
TIMEOUT = 20
CLONE_NEWNET = 0x40000000


class Mismatch(Exception):
    pass


def expect(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


class Client:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.token = args.token
        self.prefix = f"/v1/state/applications/{args.application}/service-instances/{args.instance}"
        self.container = args.container
        # wss:// against a TLS listener: trust the test CA.
        self.ssl = ssl.create_default_context(cafile=args.cafile) if args.cafile else None

    def open(self, path, query, protocol):
        url = f"{self.base}{self.prefix}{path}?{urllib.parse.urlencode(query)}"
        return connect(
            url,
            subprotocols=[protocol],
            ssl=self.ssl,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
            # Only supd's frames matter here; no extension is negotiated.
            compression=None,
        )

    def exec_interactive(self, cmd, tty):
        ws = self.open(
            f"/containers/{self.container}/exec-interactive",
            {"cmd": cmd, "tty": "true" if tty else "false"},
            EXEC,
        )
        expect("exec-interactive subprotocol", ws.subprotocol, EXEC)
        return ws

    def tunnel(self, query):
        ws = self.open("/connect", query, CONNECT)
        expect("connect subprotocol", ws.subprotocol, CONNECT)
        return ws


def read_until_close(ws):
    """Every binary frame until the server closes; returns (bytes, close code, reason)."""
    out = bytearray()
    try:
        while True:
            msg = ws.recv(timeout=TIMEOUT)
            if not isinstance(msg, bytes):
                raise Mismatch(f"text frame from supd: {msg!r}")
            if len(msg) > 64 * 1024:
                raise Mismatch(f"output frame of {len(msg)} bytes (at most 64 KiB)")
            out += msg
    except ConnectionClosed as e:
        rcvd = e.rcvd
    if rcvd is None:
        raise Mismatch("the connection ended without a close frame")
    return bytes(out), rcvd.code, rcvd.reason


def read_exactly(ws, n):
    out = bytearray()
    while len(out) < n:
        msg = ws.recv(timeout=TIMEOUT)
        if not isinstance(msg, bytes):
            raise Mismatch(f"text frame from supd: {msg!r}")
        out += msg
    return bytes(out)


def check_exec_pipes(c):
    # stdin through 0x10, closed with supd's 0x12; cat echoes it and exits 0.
    ws = c.exec_interactive("cat", tty=False)
    payload = bytes(range(256)) * 4
    ws.send(b"\x10" + payload)
    expect("cat echo", read_exactly(ws, len(payload)), payload)
    ws.send(b"\x12")
    out, code, reason = read_until_close(ws)
    expect("output after 0x12", out, b"")
    expect("close code", code, 1000)
    expect("close reason", json.loads(reason), {"exit-code": 0})


def check_exec_exit_code_and_signal(c):
    ws = c.exec_interactive("sh -c 'printf \"a b\\n\"; exit 3'", tty=False)
    out, code, reason = read_until_close(ws)
    expect("output", out, b"a b\n")
    expect("close code", code, 1000)
    expect("close reason", json.loads(reason), {"exit-code": 3})

    ws = c.exec_interactive("sh -c 'kill -TERM $$'", tty=False)
    out, code, reason = read_until_close(ws)
    expect("close code", code, 1000)
    expect("close reason", json.loads(reason), {"signal": 15})


def check_exec_tty_resize(c):
    # The resize frame comes before the line that makes the command look at its terminal.
    ws = c.exec_interactive("sh -c 'read line; stty size; echo \"[$line]\"; exit 7'", tty=True)
    ws.send(b"\x11" + json.dumps({"h": 40, "w": 100}).encode())
    ws.send(b"\x10" + b"go\n")
    out, code, reason = read_until_close(ws)
    # The terminal echoes the input line; output newlines become CR LF.
    expect("tty output", out, b"go\r\n40 100\r\n[go]\r\n")
    expect("close code", code, 1000)
    expect("close reason", json.loads(reason), {"exit-code": 7})


def check_exec_tty_eof(c):
    # With a PTY, 0x12 sends the terminal's EOF character: wc sees its input end.
    ws = c.exec_interactive("wc -c", tty=True)
    ws.send(b"\x10" + b"abc\n")
    ws.send(b"\x12")
    out, code, reason = read_until_close(ws)
    expect("tty wc output", out.replace(b" ", b""), b"abc\r\n4\r\n")
    expect("close code", code, 1000)
    expect("close reason", json.loads(reason), {"exit-code": 0})


def check_exec_unknown_frame(c):
    ws = c.exec_interactive("cat", tty=False)
    ws.send(b"\x13x")
    _, code, _ = read_until_close(ws)
    expect("close code for an unknown frame type", code, 1003)


def check_tcp_echo_and_half_close(c):
    ws = c.tunnel({"protocol": "tcp", "port": 7})
    data = bytes(range(256)) * 1024  # 256 KiB, several frames each way
    for i in range(0, len(data), 50_000):
        ws.send(data[i : i + 50_000])
    expect("echo through the tunnel", read_exactly(ws, len(data)), data)
    # supd's addition: an empty frame half-closes; cat sees EOF, exits, the target closes.
    ws.send(b"")
    out, code, _ = read_until_close(ws)
    expect("bytes after the half-close", out, b"")
    expect("close code on the target's EOF", code, 1000)

    ws = c.tunnel({"protocol": "tcp", "port": 8})
    ws.send(b"x" * 12345)
    ws.send(b"")
    out, code, _ = read_until_close(ws)
    expect("wc -c through the half-closed tunnel", out.strip(), b"12345")
    expect("close code", code, 1000)


def check_tcp_text_frame(c):
    ws = c.tunnel({"protocol": "tcp", "port": 7})
    ws.send("text")
    _, code, _ = read_until_close(ws)
    expect("close code for a text frame", code, 1003)


def check_tcp_refused(c):
    try:
        ws = c.tunnel({"protocol": "tcp", "port": 9})
    except InvalidStatus as e:
        expect("refused connect status", e.response.status_code, 502)
        body = json.loads(e.response.body)
        if not body["errors"][0]["error-message"]:
            raise Mismatch(f"empty error message: {body}")
        return
    ws.close()
    raise Mismatch("a refused connect was upgraded")


def check_tcp_connect(c):
    ws = c.open(f"/containers/{c.container}/tcp-connect", {"port": 7}, TCP_CONNECT)
    expect("tcp-connect subprotocol", ws.subprotocol, TCP_CONNECT)
    expect("Deprecation header", ws.response.headers.get("Deprecation"), "true")
    ws.send(b"through the bridge")
    expect("tcp-connect echo", read_exactly(ws, 18), b"through the bridge")
    ws.close()


def udp_echo_in_netns(pid):
    """A UDP echo on 127.0.0.1 inside the network namespace of process `pid`; returns its port."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready = threading.Event()
    result = {}

    def serve():
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), "setns")
                ready.set()
                return
        finally:
            os.close(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        result["port"] = s.getsockname()[1]
        ready.set()
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(TIMEOUT)
    if "error" in result:
        raise result["error"]
    return result["port"]


def check_udp(c, pid):
    port = udp_echo_in_netns(pid)
    ws = c.tunnel({"protocol": "udp", "port": port})
    for size in (1, 1000, 65507):
        d = os.urandom(size)
        ws.send(d)
        got = ws.recv(timeout=TIMEOUT)
        expect(f"datagram of {size} bytes", got, d)
    # Boundaries hold: three datagrams, three frames.
    for size in (3, 2, 1):
        ws.send(bytes([size]) * size)
    for size in (3, 2, 1):
        expect("datagram boundary", ws.recv(timeout=TIMEOUT), bytes([size]) * size)
    ws.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="ws://host:port or wss://host:port")
    p.add_argument("--cafile", help="the CA to trust for wss://")
    p.add_argument("--token", required=True)
    p.add_argument("--application", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--container", required=True)
    p.add_argument("--pid", type=int, required=True, help="the container's first process")
    args = p.parse_args()
    c = Client(args)
    checks = [
        ("exec-interactive: pipes, 0x10 stdin, 0x12 stdin close", lambda: check_exec_pipes(c)),
        ("exec-interactive: exit code and signal in the close reason", lambda: check_exec_exit_code_and_signal(c)),
        ("exec-interactive: tty and 0x11 resize", lambda: check_exec_tty_resize(c)),
        ("exec-interactive: tty and 0x12 EOF", lambda: check_exec_tty_eof(c)),
        ("exec-interactive: unknown frame type", lambda: check_exec_unknown_frame(c)),
        ("connect: tcp echo and half-close", lambda: check_tcp_echo_and_half_close(c)),
        ("connect: text frame", lambda: check_tcp_text_frame(c)),
        ("connect: refused target", lambda: check_tcp_refused(c)),
        ("connect: udp datagrams", lambda: check_udp(c, args.pid)),
        ("tcp-connect: echo via the container IP", lambda: check_tcp_connect(c)),
    ]
    failed = 0
    for name, check in checks:
        try:
            check()
            print(f"ok    {name}")
        except Exception as e:  # every failure is reported, then the exit status says it
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    print(f"ws_client: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
