#!/usr/bin/env bash
# Checks the live daemon against docs/openapi.yaml with schemathesis (every check: no 5xx
# outside the documented ones, every status, header, content type and body as documented, bad
# input refused, good input accepted), then drives exec-interactive and connect with an
# independent websocket client (tests/conformance/ws_client.py, Python `websockets`).
#
# Needs Docker, the test image (scripts/build-test-image.sh) and python3 with venv; installs
# pinned schemathesis and websockets from PyPI into target/api-check-venv. Starts its own supd
# on a free port with its own tokens, and its own labelled containers; removes them on exit.
#
# Environment: API_CHECK_EXAMPLES (schemathesis examples per operation, default 25),
# API_CHECK_SEED (a fixed seed, to replay a run), API_CHECK_TLS=1 (the same checks over a TLS
# listener: a test CA from scripts/make-test-ca.sh, https:// and wss:// trusting only it).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
WEBSOCKETS_VERSION=15.0.1
IMAGE=supd-test-busybox:latest
EXAMPLES=${API_CHECK_EXAMPLES:-25}

venv=target/api-check-venv
stamp="$venv/.pinned-$SCHEMATHESIS_VERSION-$WEBSOCKETS_VERSION"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "websockets==$WEBSOCKETS_VERSION"
    touch "$stamp"
fi
py="$venv/bin/python"

cargo build --quiet
supd_bin=$PWD/target/debug/supd

work=$(mktemp -d)
label="supd.test=api-check-$$"
supd_pid=""
cleanup() {
    if [ -n "$supd_pid" ]; then
        kill "$supd_pid" 2>/dev/null || true
        wait "$supd_pid" 2>/dev/null || true
    fi
    ids=$(docker ps -aq --filter "label=$label")
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Tokens: the admin token for the checks; schemathesis also tries requests without it.
token=$("$py" -c 'import secrets; print(secrets.token_hex(32))')
token_sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/tokens.yaml" <<EOF
tokens:
  - name: api-check
    sha256: "$token_sha"
    operations: [read, exec, connect, restart]
    applications: ["*"]
EOF
# A short connect timeout: generated addresses are mostly unreachable, and each would
# otherwise hold a request for the default 5 s.
cat >"$work/supd.yaml" <<EOF
connect: {connect-timeout-ms: 300}
EOF

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
ws_base="ws://127.0.0.1:$port"
listen_args=(--listen "127.0.0.1:$port")
curl_tls=()
st_tls=()
ws_tls=()
if [ "${API_CHECK_TLS:-}" = 1 ]; then
    sh scripts/make-test-ca.sh "$work/pki" >/dev/null
    cat >>"$work/supd.yaml" <<EOF
listen:
  - address: '127.0.0.1:$port'
    tls: {cert-file: $work/pki/server.pem, key-file: $work/pki/server.key}
EOF
    # The certificate names localhost and 127.0.0.1; clients trust the test CA only.
    base="https://localhost:$port"
    ws_base="wss://localhost:$port"
    listen_args=()
    curl_tls=(--cacert "$work/pki/ca.pem")
    st_tls=(--tls-verify "$work/pki/ca.pem")
    ws_tls=(--cafile "$work/pki/ca.pem")
fi

run() { docker run -d --label "$label" --stop-timeout 1 "$@" >/dev/null; }
labels() { # application service container [extra docker args...]
    local app=$1 svc=$2 ctr=$3
    shift 3
    echo --label "io.supd.application=$app" --label "io.supd.service=$svc" \
        --label io.supd.instance=1 --label "io.supd.container=$ctr" "$@"
}
idle='trap "exit 0" TERM; while :; do sleep 1; done'

# The instance the document's examples name: apicheck/web-1 with container `web` and init
# container `setup` (completed), so state answers carry real data and operations run.
# shellcheck disable=SC2046
run $(labels apicheck web setup --label io.supd.init-container=true) "$IMAGE" sh -c 'echo ready'
# shellcheck disable=SC2046
run $(labels apicheck web web) "$IMAGE" sh -c "$idle"
# A second instance, for lists of more than one.
# shellcheck disable=SC2046
run $(labels apicheck worker worker --label io.supd.application-version=1.2.3) "$IMAGE" sh -c "$idle"
# A VM launcher (no QEMU in it: its state is what is checked), so that the state answers
# carry a `vm-container` object.
# shellcheck disable=SC2046
run $(labels apicheck legacy qemu --label io.supd.vm-container=true) "$IMAGE" sh -c "$idle"
# The websocket client's own instance (schemathesis does not know its name): a TCP echo on
# port 7, a byte counter on port 8 (answers once its input ends) and an idle loop.
# shellcheck disable=SC2046
run $(labels apiws box box) "$IMAGE" sh -c \
    "nc -ll -p 7 -e cat & nc -ll -p 8 -e wc -c & $idle"
box_id=$(docker ps -q --filter "label=$label" --filter "label=io.supd.application=apiws")

RUST_LOG=info "$supd_bin" --config "$work/supd.yaml" "${listen_args[@]}" \
    --tokens "$work/tokens.yaml" --tenant acme --site local --host api-check \
    >"$work/supd.log" 2>&1 &
supd_pid=$!

# Ready when both instances are seen running.
ready=""
for _ in $(seq 1 100); do
    if curl -sf "${curl_tls[@]}" -H "Authorization: Bearer $token" \
        "$base/v1/state/applications/apicheck/service-instances?fields=name;oper-status" 2>/dev/null |
        grep -q 'web-1","oper-status":"running' &&
        curl -sf "${curl_tls[@]}" -H "Authorization: Bearer $token" \
            "$base/v1/state/applications/apicheck/service-instances/legacy-1?fields=vm-container" 2>/dev/null |
        grep -q '"oper-status":"running"' &&
        curl -sf "${curl_tls[@]}" -H "Authorization: Bearer $token" \
            "$base/v1/state/applications/apiws/service-instances/box-1" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "api-check: supd did not become ready" >&2
    cat "$work/supd.log" >&2
    exit 1
fi

status=0
seed_args=()
if [ -n "${API_CHECK_SEED:-}" ]; then
    seed_args=(--seed "$API_CHECK_SEED")
fi
SCHEMATHESIS_HOOKS=tests/conformance/schemathesis_hooks.py \
    "$venv/bin/st" --config-file tests/conformance/schemathesis.toml run docs/openapi.yaml \
    --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks all \
    --max-examples "$EXAMPLES" \
    --workers 2 \
    --request-timeout 20 \
    --generation-database none \
    --no-color \
    "${st_tls[@]}" \
    "${seed_args[@]}" || status=$?

if ! kill -0 "$supd_pid" 2>/dev/null; then
    echo "api-check: supd died during the schemathesis run" >&2
    status=1
fi

box_pid=$(docker inspect -f '{{.State.Pid}}' "$box_id")
"$py" tests/conformance/ws_client.py --base "$ws_base" "${ws_tls[@]}" --token "$token" \
    --application apiws --instance box-1 --container box --pid "$box_pid" || status=$?

if [ "$status" -ne 0 ]; then
    echo "api-check: FAILED (supd's log follows, last 200 lines)" >&2
    tail -n 200 "$work/supd.log" >&2
    exit "$status"
fi
echo "api-check: ok"
