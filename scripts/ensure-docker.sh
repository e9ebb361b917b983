#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock, installing Debian's docker.io and
# starting containerd + dockerd in the background when it is missing. An engine that is already
# running is left alone. Also installs what the tests need (busybox-static, iproute2, systemd
# for systemd-analyze, curl and python3-venv for the API check, util-linux, procps, gcc with
# libc6-dev for the static C helpers of the container-entry tests, openssl for the TLS
# tests' certificates and `openssl s_client`, and socat for the bench's relay ceilings).
set -euo pipefail

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
# The test image needs the static build (it runs FROM scratch).
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# scripts/api-check.sh: curl, and a python3 that can make a venv (Debian splits that out).
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# The TLS tests: scripts/make-test-ca.sh and `openssl s_client` (curl is above).
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# supd-bench's fair ceiling for tunnels: a plain TCP relay over the same hops.
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3 python3-venv)
# prlimit and nsenter (tests, bench), pkill (below).
command -v prlimit >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v pkill >/dev/null 2>&1 || need_pkgs+=(procps)
# Tests compile small static C programs for hostile containers (cc -static, kernel headers
# for FUSE and seccomp).
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need_pkgs+=(libc6-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "ensure-docker: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_pkgs[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

log_dir=/var/log/supd-ci
mkdir -p "$log_dir"

# A machine image may carry a stale /run/containerd/containerd.sock (and /run/docker.sock) from
# the time it was made, with nobody listening. Ask the daemons rather than trust the files.
containerd_up() { ctr --address /run/containerd/containerd.sock version >/dev/null 2>&1; }
if ! containerd_up; then
  pkill -x containerd 2>/dev/null || true
  rm -f /run/containerd/containerd.sock /run/containerd/containerd.sock.ttrpc
  nohup containerd >"$log_dir/containerd.log" 2>&1 &
  for _ in $(seq 1 300); do containerd_up && break; sleep 0.2; done
  if ! containerd_up; then
    echo "ensure-docker: containerd did not come up; see $log_dir/containerd.log" >&2
    tail -20 "$log_dir/containerd.log" >&2 || true
    exit 1
  fi
fi
# Only the engine behind /var/run/docker.sock counts (a test may run a private dockerd).
if ! { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }; then
  rm -f /var/run/docker.sock /var/run/docker.pid
  nohup dockerd --containerd=/run/containerd/containerd.sock >"$log_dir/dockerd.log" 2>&1 &
fi
for _ in $(seq 1 300); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "ensure-docker: the Docker engine did not come up; see $log_dir/dockerd.log" >&2
tail -20 "$log_dir/dockerd.log" >&2 || true
exit 1
