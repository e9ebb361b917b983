# Shared harness for attacks3/sites-*: build supd, make a private dir with a tokens file,
# start a supd "A" whose `sites:` names peer "b" at a URL the attack chooses (a fake peer).
# Source it from run.sh; call rt_setup, then rt_start_a PEER_URL [extra yaml], rt_cleanup.
set -u
RT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RT_ROOT/target}
SUPD=$CARGO_TARGET_DIR/debug/supd
RT_PIDS=()

rt_setup() {
  (cd "$RT_ROOT" && cargo build -q --bin supd) || exit 2
  RT_DIR=$(mktemp -d /tmp/supd-rt-sites-XXXXXX)
  chmod 700 "$RT_DIR"
  # admin: everything; reader: read on app "alpha" only.
  ADMIN=$("$SUPD" token create --name admin --operations read,exec,connect,restart \
      --applications '*' --tokens "$RT_DIR/tokens.yaml" | tail -1)
  READER=$("$SUPD" token create --name reader --operations read \
      --applications 'alpha' --tokens "$RT_DIR/tokens.yaml" | tail -1)
  chmod 600 "$RT_DIR/tokens.yaml"
  trap rt_cleanup EXIT
}

rt_free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# rt_start_a PEER_URL [EXTRA_SITE_YAML_LINES]
rt_start_a() {
  A_PORT=$(rt_free_port)
  local listen="[127.0.0.1:$A_PORT]"
  if [ -n "${RT_TLS:-}" ]; then
    # A's listener serves TLS with the test PKI of scripts/make-test-ca.sh.
    [ -f "$RT_DIR/pki/server.pem" ] || sh "$RT_ROOT/scripts/make-test-ca.sh" "$RT_DIR/pki"
    listen="[{address: '127.0.0.1:$A_PORT', tls: {cert-file: $RT_DIR/pki/server.pem, key-file: $RT_DIR/pki/server.key${RT_TLS_EXTRA:-}}}]"
  fi
  cat > "$RT_DIR/a.yaml" <<YAML
listen: $listen
tokens: $RT_DIR/tokens.yaml
site: edge-a
sites:
  b:
    url: $1
    response-timeout-ms: ${RT_RESPONSE_TIMEOUT_MS:-3000}
${2:-}
YAML
  RUST_LOG=${RUST_LOG:-info} "$SUPD" --config "$RT_DIR/a.yaml" >"$RT_DIR/a.log" 2>&1 &
  RT_PIDS+=($!)
  A_PID=$!
  for _ in $(seq 50); do
    python3 - "$A_PORT" <<'PY' && return 0
import socket,sys
try: socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2).close()
except OSError: sys.exit(1)
PY
    sleep 0.1
  done
  echo "supd A did not start:"; cat "$RT_DIR/a.log"; exit 2
}

rt_cleanup() {
  for p in "${RT_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ -n "${RT_DIR:-}" ] && rm -rf "$RT_DIR"
}
