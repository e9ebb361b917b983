#!/bin/bash
# SIGTERM while a forwarded request waits for its peer's answer: Forward::shutdown sets
# `gone` for anything but a websocket, so the operation ends with no reply, the client's
# connection stays in Phase::Waiting with nobody to answer it, and supd waits out its whole
# shutdown grace for it, then closes it with nothing sent. The peer answered 1.5 s after the
# request, well inside the grace. Exit 1 when the client gets no answer.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
P=$(rt_free_port)
python3 "$HERE/../fakepeer.py" "$P" slow "$RT_DIR/peer.log" & RT_PIDS+=($!)
rt_start_a "http://127.0.0.1:$P"
sleep 1
python3 - "$A_PORT" "$READER" "$A_PID" <<'PY'
import os, signal, socket, sys, time
port, tok, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(("GET /v1/state/applications/alpha/service-instances?site=b HTTP/1.1\r\nHost: x\r\n"
           "Authorization: Bearer %s\r\n\r\n" % tok).encode())
time.sleep(0.5)
t0 = time.time()
os.kill(pid, signal.SIGTERM)   # the peer answers 1 s from now
s.settimeout(10)
try:
    d = s.recv(4096)
except OSError as e:
    d = repr(e).encode()
print("SIGTERM + %.2f s: the client got %r" % (time.time() - t0, d[:120]))
sys.exit(1 if not d.startswith(b"HTTP/1.1") else 0)
PY
rc=$?
grep -v 'token "' "$RT_DIR/a.log" | grep -E "shutting|stopped"
[ $rc = 1 ] && echo ">>> BUG: the forwarded request in flight got no answer at all (not the peer's, not a 503)"
exit $rc
