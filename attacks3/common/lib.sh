# Shared set-up for the attacks3 reproductions: source it from a run.sh.
# Builds supd, starts it behind a Docker socket proxy that shows it only containers labelled
# supd.test=redteam-vm (other VM launchers on the engine are left alone), makes a token, and
# cleans everything up (containers, images, processes it started) on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMMON="$ROOT/attacks3/common"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RUN_ID=rtvm-$$
WORK=$(mktemp -d /tmp/$RUN_ID.XXXX)
LABEL=supd.test=redteam-vm
PORT=${PORT:-$((40000 + $$ % 20000))}
BASE=http://127.0.0.1:$PORT/v1/state/applications
SUPD_PID=
PROXY_PID=
CONTAINERS=()
IMAGES=()

cleanup() {
    set +e
    [ -n "$SUPD_PID" ] && kill "$SUPD_PID" 2>/dev/null
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
    for i in "${IMAGES[@]}"; do docker rmi -f "$i" >/dev/null 2>&1; done
    [ -n "${EXTRA_CLEANUP:-}" ] && eval "$EXTRA_CLEANUP"
    rm -rf "$WORK"
}
trap cleanup EXIT

build_supd() {
    (cd "$ROOT" && cargo build --quiet 2>&1 | tail -5)
    SUPD_BIN=$CARGO_TARGET_DIR/debug/supd
}

# start_supd [extra yaml lines]
start_supd() {
    python3 "$COMMON/docker-filter-proxy.py" "$WORK/docker.sock" >"$WORK/proxy.log" 2>&1 &
    PROXY_PID=$!
    for _ in $(seq 50); do [ -S "$WORK/docker.sock" ] && break; sleep 0.1; done
    "$SUPD_BIN" token create --name rt --operations read,exec,connect,restart \
        --tokens "$WORK/tokens.yaml" >"$WORK/token" 2>/dev/null
    TOKEN=$(cat "$WORK/token")
    {
        echo "listen: [127.0.0.1:$PORT]"
        echo "tokens: $WORK/tokens.yaml"
        echo "docker-socket: $WORK/docker.sock"
        printf '%s\n' "$@"
    } >"$WORK/supd.yaml"
    RUST_LOG=${RUST_LOG:-info} "$SUPD_BIN" --config "$WORK/supd.yaml" >"$WORK/supd.log" 2>&1 &
    SUPD_PID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
        sleep 0.1
    done
}

api() { curl -s -H "Authorization: Bearer $TOKEN" "$@"; }

# ws_get URL PROTOCOL: a websocket upgrade, only the status printed
ws_status() {
    curl -s -m "${WS_TIMEOUT:-8}" -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $TOKEN" \
        -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13" \
        -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" -H "Sec-WebSocket-Protocol: $2" "$1"
}

# static_image NAME C-FILE...: a busybox image with static C programs compiled into /
static_image() {
    local name=$1; shift
    local dir=$WORK/img-$name
    mkdir -p "$dir"
    for src in "$@"; do
        gcc -static -O2 -o "$dir/$(basename "${src%.c}")" "$src"
    done
    printf 'FROM supd-test-busybox:latest\nCOPY . /\n' >"$dir/Dockerfile"
    docker build -q --label "$LABEL" -t "$name" "$dir" >/dev/null 2>&1
    IMAGES+=("$name")
}

# launcher NAME APP [docker run args...] -- IMAGE CMD...: a VM launcher of instance APP/vm-1
launcher() {
    local name=$1 app=$2; shift 2
    docker run -d --name "$name" --label "$LABEL" --label io.supd.application="$app" \
        --label io.supd.service=vm --label io.supd.instance=1 \
        --label io.supd.vm-container=true "$@" >/dev/null
    CONTAINERS+=("$name")
}

# children of supd in uninterruptible sleep (stuck helpers), including orphaned ones
stuck_helpers() {
    ps -e -o stat=,cmd= | awk -v bin="$SUPD_BIN" '$1 ~ /^D/ && $2 == bin' | wc -l
}

wait_mirror() { sleep "${1:-2}"; }
