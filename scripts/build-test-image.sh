#!/usr/bin/env bash
# Build the tests' container image locally, with no registry: FROM scratch around Debian's
# static busybox and its applet links, plus a passwd/group with a non-root user (1000).
set -euo pipefail
image=${SUPD_TEST_IMAGE:-supd-test-busybox:latest}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/home/app" "$ctx/rootfs/root"
cp /usr/bin/busybox "$ctx/rootfs/bin/busybox"
for applet in $(/usr/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
done
cat >"$ctx/rootfs/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$ctx/rootfs/etc/group" <<'G'
root:x:0:
wheel:x:10:app
app:x:1000:
nogroup:x:65534:
G
chmod 1777 "$ctx/rootfs/tmp"
cat >"$ctx/Dockerfile" <<'D'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["sh"]
D
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
echo "$image"
