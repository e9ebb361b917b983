#!/bin/bash
# A site's token-file is opened (auth::read_bounded: File::open) BEFORE the checks that it is
# a regular file in a trusted directory. When the directory is one another user may write
# (exactly the misconfiguration those checks exist to catch: the site is then refused with
# 502), that user replaces the file with a FIFO, and the next SIGHUP blocks supd's event loop
# in open(2) for as long as nobody writes to the FIFO. Exit 1 when the loop hangs.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../sites-lib.sh"
rt_setup
chmod 711 "$RT_DIR"                      # others may traverse it (not write)
mkdir -m 0777 "$RT_DIR/shared"          # misconfigured: anyone may write here
echo "site-secret" > "$RT_DIR/shared/b.token"; chmod 600 "$RT_DIR/shared/b.token"
P=$(rt_free_port)
python3 "$HERE/../fakepeer.py" "$P" ok "$RT_DIR/peer.log" & RT_PIDS+=($!)
rt_start_a "http://127.0.0.1:$P" "    token-file: $RT_DIR/shared/b.token"
REQ='OPTIONS /v1/state/applications/alpha/service-instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
probe() { timeout 10 python3 "$HERE/../rawclient.py" "$A_PORT" 3 "$REQ" | head -1; }
echo "=== at start (the untrusted directory is caught: site b unusable):"
grep -i "b.token" "$RT_DIR/a.log"
echo "=== a request before SIGHUP:"; probe
# The other user (nobody) swaps the token file for a FIFO.
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "rm -f '$RT_DIR/shared/b.token' && mkfifo '$RT_DIR/shared/b.token'"
ls -l "$RT_DIR/shared/"
kill -HUP "$A_PID"; sleep 0.5
echo "=== a request 0.5 s after SIGHUP (3 s allowed):"
s=$(date +%s); out=$(probe); d=$(( $(date +%s) - s ))
echo "${out:-<no answer>} after ${d}s"
echo "=== where supd's thread is:"; cat /proc/$A_PID/wchan; echo; ls -l /proc/$A_PID/fd 2>/dev/null | grep -c . 
bad=0
[ -z "$out" ] && { echo ">>> BUG: supd's loop is stuck opening the FIFO"; bad=1; }
# Let it go: open the FIFO for writing once.
timeout 2 sh -c "echo x > '$RT_DIR/shared/b.token'" ; sleep 0.3
echo "=== after a writer opened the FIFO:"; probe
exit $bad
