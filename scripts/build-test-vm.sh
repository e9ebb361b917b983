#!/bin/bash
# Builds the Docker image `supd-test-vm:local`: a "launcher" container that runs QEMU with a tiny
# Debian-kernel + busybox + qemu-ga guest, for supd's VM-container tests. See docs/test-vm.md.
#
# Everything comes from Debian packages through the host's apt (no registry): mmdebstrap makes
# the launcher's root filesystem (qemu-system-x86 and its firmware), the cloud kernel is unpacked
# with `dpkg -x`, the initramfs is assembled here, and the result is `docker import`ed.
#
# Idempotent: the image carries the sha256 of this script as a label; when the existing image has
# the same hash nothing is rebuilt. FORCE=1 rebuilds anyway. All guest/launcher scripts live in
# this file so that the hash covers them.
set -euo pipefail

IMAGE=${SUPD_TEST_VM_IMAGE:-supd-test-vm:local}
SUITE=${SUPD_TEST_VM_SUITE:-bookworm}
HASH_LABEL=io.supd.test-vm.build-hash

self=$(readlink -f "$0")
hash=$(sha256sum "$self" | cut -d' ' -f1)

if [ "${FORCE:-0}" != 1 ]; then
    have=$(docker image inspect -f "{{index .Config.Labels \"$HASH_LABEL\"}}" "$IMAGE" 2>/dev/null || true)
    if [ "$have" = "$hash" ]; then
        echo "$IMAGE is up to date (build hash $hash)"
        exit 0
    fi
fi

log() { echo "build-test-vm: $*" >&2; }

if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/supd-test-vm.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
initrd=$work/initramfs

# --- launcher root filesystem ----------------------------------------------------------------
# qemu-guest-agent and busybox-static are installed only so that their binaries (and the exact
# shared libraries qemu-ga links against, resolved by the rootfs's own ldd) can be copied into the
# guest's initramfs; they cost ~3 MB in the launcher image. mmdebstrap's merged-usr hook merges /usr
# itself and installs a dummy usr-is-merged, so that apt does not satisfy init-system-helpers'
# "usrmerge | usr-is-merged" with usrmerge, which pulls in the whole of perl (~50 MB). iso-codes
# (a libgstreamer dependency of QEMU's spice) is never read.
log "mmdebstrap $SUITE (qemu-system-x86, qemu-guest-agent, busybox-static)"
mmdebstrap --quiet --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=qemu-system-x86,qemu-guest-agent,busybox-static \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/iso-codes/*' \
    "$SUITE" "$rootfs"
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

qemu_version=$(chroot "$rootfs" dpkg-query -W -f='${Version}' qemu-system-x86)

# --- guest kernel ------------------------------------------------------------------------------
# The cloud flavour: virtio drivers, 8250 serial console, no hardware zoo. Resolve the metapackage
# to the concrete ABI package and unpack it without installing (no initramfs-tools run).
kpkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
log "kernel $kpkg"
mkdir -p "$work/kernel"
chmod 777 "$work/kernel"   # apt-get download drops to _apt
(cd "$work/kernel" && apt-get download -q "$kpkg" >/dev/null && dpkg -x ./*.deb x)
kver=${kpkg#linux-image-}
kdir=$work/kernel/x/lib/modules/$kver
kconfig=$work/kernel/x/boot/config-$kver

# --- guest initramfs -----------------------------------------------------------------------------
log "initramfs"
mkdir -p "$initrd"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,lib/modules,etc/init.d,etc/acpi/PWRF,proc,sys,dev,run,tmp,root,srv}
mkdir -p "$initrd/var"
ln -s ../run "$initrd/var/run"
chmod 1777 "$initrd/tmp"
# The kernel opens /dev/console for init before anything is mounted.
mknod -m 600 "$initrd/dev/console" c 5 1
mknod -m 666 "$initrd/dev/null" c 1 3

# Static busybox: init, sh, stty, setsid, ps, kill, ip, nc, httpd, ... as symlinks.
cp "$rootfs/bin/busybox" "$initrd/bin/busybox"
"$initrd/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$initrd/$(dirname "$applet")"
    ln -sf /bin/busybox "$initrd/$applet"
done

# qemu-ga and the shared libraries its ldd lists (and the loader), at the same paths.
cp "$rootfs/usr/sbin/qemu-ga" "$initrd/usr/sbin/qemu-ga"
chroot "$rootfs" ldd /usr/sbin/qemu-ga | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$initrd$(dirname "$lib")"
    cp -L "$rootfs$lib" "$initrd$lib"
done

# Kernel modules, in load order. Each one must be either a module in the package or built in.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console failover net_failover virtio_net evdev button"
mod_list=
for m in $modules; do
    f=$(find "$kdir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
    if [ -n "$f" ]; then
        case $f in
            *.xz) xz -dc "$f" >"$initrd/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$f" >"$initrd/lib/modules/$m.ko" ;;
            *) cp "$f" "$initrd/lib/modules/$m.ko" ;;
        esac
        mod_list="$mod_list $m"
    elif grep -q "/$m.ko" "$kdir/modules.builtin"; then
        log "module $m is built into $kver"
    else
        log "module $m neither a module nor built into $kver"; exit 1
    fi
done
grep -E '^CONFIG_(SERIAL_8250_CONSOLE|DEVTMPFS|BLK_DEV_INITRD|RD_GZIP)=y' "$kconfig" | wc -l | grep -qx 4 ||
    { log "$kver lacks a built-in 8250 console, devtmpfs or gzip initramfs"; exit 1; }

# acpid: ACPI power button (QMP system_powerdown, sent by the launcher on docker stop) runs
# /etc/acpi/PWRF/00000080 -> poweroff. (Its default log, /var/log/acpid.log, does not exist here.)
cat >"$initrd/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:/sbin/start-qga
::respawn:/sbin/acpid -f -l /run/acpid.log
ttyS0::respawn:-/bin/sh
::shutdown:/bin/sync
EOF

cat >"$initrd/etc/init.d/rcS" <<EOF
#!/bin/sh
# Guest boot: pseudo filesystems, virtio modules, static network. No udev: devtmpfs makes the
# /dev/vportNpM, ttyS* and input nodes.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
for m in$mod_list; do insmod /lib/modules/\$m.ko; done
if grep -q supd.probe /proc/cmdline; then
    # The launcher's KVM probe: booting this far proves the accelerator works.
    echo SUPD-VM-PROBE-OK
    poweroff -f
fi
hostname supd-test-vm
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo nameserver 10.0.2.3 >/etc/resolv.conf
EOF

cat >"$initrd/sbin/start-qga" <<'EOF'
#!/bin/sh
# Finds the agent's virtio-serial port by name (no udev) and runs qemu-ga on it; init respawns it.
for d in /sys/class/virtio-ports/*; do
    if [ "$(cat "$d/name" 2>/dev/null)" = org.qemu.guest_agent.0 ]; then
        exec /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${d##*/}" -t /run -f /run/qemu-ga.pid -l /run/qemu-ga.log
    fi
done
sleep 1
EOF

# qemu-ga's guest-shutdown runs /sbin/shutdown -h|-r -P +0 "..."; map it onto busybox init.
cat >"$initrd/sbin/shutdown" <<'EOF'
#!/bin/sh
case " $* " in
    *" -r "*) exec /bin/busybox reboot ;;
    *" -H "*) exec /bin/busybox halt ;;
    *) exec /bin/busybox poweroff ;;
esac
EOF
cat >"$initrd/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
exec /bin/busybox poweroff
EOF

cat >"$initrd/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
PS1='root@supd-test-vm:$PWD# '
EOF
cat >"$initrd/etc/os-release" <<EOF
NAME="supd test VM"
ID=supd-test-vm
ID_LIKE=debian
VERSION_ID=1
PRETTY_NAME="supd test VM (Debian $SUITE kernel $kver, busybox, qemu-ga)"
EOF
echo 'root:x:0:0:root:/root:/bin/sh' >"$initrd/etc/passwd"
echo 'root:x:0:' >"$initrd/etc/group"
echo supd-test-vm >"$initrd/etc/hostname"
echo 'supd test VM' >"$initrd/srv/index.html"
chmod 755 "$initrd/etc/init.d/rcS" "$initrd/sbin/start-qga" "$initrd/sbin/shutdown" "$initrd/etc/acpi/PWRF/00000080"
ln -s /bin/busybox "$initrd/init"

mkdir -p "$rootfs/opt/supd-vm"
(cd "$initrd" && find . | sort | "$rootfs/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -6 >"$rootfs/opt/supd-vm/initramfs.img"
cp "$work/kernel/x/boot/vmlinuz-$kver" "$rootfs/opt/supd-vm/vmlinuz"

# --- launcher entrypoint -----------------------------------------------------------------------
cat >"$rootfs/usr/local/bin/supd-vm-launch" <<'EOF'
#!/bin/sh
# Entrypoint of supd-test-vm: runs QEMU with the guest agent, console and ttyS1 on unix sockets in
# $SUPD_VM_RUN_DIR. PID 1 stays this shell so that docker stop's SIGTERM becomes an ACPI power-off
# of the guest (through QMP), falling back to QEMU's own clean quit on SIGTERM.
set -u
RUN=${SUPD_VM_RUN_DIR:-/run/supd-vm}
MEM=${SUPD_VM_MEMORY:-128}
ACCEL=${SUPD_VM_ACCEL:-auto}                 # auto | kvm | tcg
PROBE_TIMEOUT=${SUPD_VM_KVM_PROBE_TIMEOUT:-10}
GRACE=${SUPD_VM_POWERDOWN_GRACE:-4}          # seconds the guest gets to power off on SIGTERM
PORTS=${SUPD_VM_FORWARD_PORTS-22 80 8080}    # launcher 127.0.0.1:P -> guest 10.0.2.15:P
GUEST=10.0.2.15
KERNEL=/opt/supd-vm/vmlinuz
INITRD=/opt/supd-vm/initramfs.img
APPEND="console=ttyS0 quiet panic=-1 ${SUPD_VM_APPEND:-}"

log() { echo "supd-vm-launch: $*" >&2; }

mkdir -p "$RUN"
rm -f "$RUN"/qga.sock "$RUN"/console.sock "$RUN"/ttyS1.sock "$RUN"/qmp.sock "$RUN"/.qmp-pipe.in "$RUN"/.qmp-pipe.out

kvm_works() {
    # /dev/kvm can exist yet hang early boot (nested virtualisation): boot the real guest once
    # with a marker on the command line and a hard timeout.
    [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
    (timeout -s KILL "$PROBE_TIMEOUT" qemu-system-x86_64 -accel kvm -cpu host -m 64 -nodefaults \
        -display none -no-reboot -serial stdio -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 supd.probe" </dev/null 2>/dev/null) 2>/dev/null |
        grep -q SUPD-VM-PROBE-OK
}

case $ACCEL in
    kvm) accel="-accel kvm -cpu host" ;;
    tcg) accel="-accel tcg" ;;
    *)
        if kvm_works; then accel="-accel kvm -cpu host"; else accel="-accel tcg"; fi ;;
esac
log "accelerator: $accel"

fwd=
for p in $PORTS; do fwd="$fwd,hostfwd=tcp:127.0.0.1:$p-$GUEST:$p"; done

# Private QMP channel for the SIGTERM path (sh cannot speak to a unix socket); its output is
# drained so that QEMU never blocks on it.
mkfifo "$RUN/.qmp-pipe.in" "$RUN/.qmp-pipe.out"

# shellcheck disable=SC2086
qemu-system-x86_64 -name supd-test-vm $accel -m "$MEM" -smp 1 \
    -nographic -nodefaults -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
    -chardev socket,id=qga,path="$RUN/qga.sock",server=on,wait=off \
    -device virtio-serial-pci,id=vser0 \
    -device virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0 \
    -chardev socket,id=con0,path="$RUN/console.sock",server=on,wait=off \
    -serial chardev:con0 \
    -chardev socket,id=t1,path="$RUN/ttyS1.sock",server=on,wait=off \
    -serial chardev:t1 \
    -chardev socket,id=qmp,path="$RUN/qmp.sock",server=on,wait=off \
    -mon chardev=qmp,mode=control \
    -chardev pipe,id=qmpp,path="$RUN/.qmp-pipe" \
    -mon chardev=qmpp,mode=control \
    -netdev user,id=n0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3$fwd \
    -device virtio-net-pci,netdev=n0,romfile= \
    </dev/null &
qemu=$!
cat "$RUN/.qmp-pipe.out" >/dev/null &
drain=$!

stop() {
    log "SIGTERM: ACPI power-off, then QEMU quit after ${GRACE}s"
    printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n' >"$RUN/.qmp-pipe.in"
    i=0
    while kill -0 "$qemu" 2>/dev/null && [ "$i" -lt "$((GRACE * 10))" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -TERM "$qemu" 2>/dev/null
    finish
}
finish() {
    # wait also collects the status of a child the shell already reaped while sleeping.
    wait "$qemu"
    rc=$?
    kill "$drain" 2>/dev/null
    log "qemu exited ($rc)"
    exit "$rc"
}
trap stop TERM INT
finish
EOF
chmod 755 "$rootfs/usr/local/bin/supd-vm-launch"

# --- image -------------------------------------------------------------------------------------
log "docker import $IMAGE"
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/supd-vm-launch"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL $HASH_LABEL=$hash" \
    --change "LABEL io.supd.test-vm.kernel=$kver" \
    --change "LABEL io.supd.test-vm.qemu=$qemu_version" \
    --change 'LABEL io.supd.vm-container=true' \
    --change 'LABEL io.supd.vm.address=127.0.0.1' \
    - "$IMAGE" >/dev/null
new=$(docker image inspect -f '{{.Id}}' "$IMAGE")
# The previous build of this script is now untagged; drop it unless something still uses it.
if [ -n "$old" ] && [ "$old" != "$new" ]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
log "built $IMAGE ($new, kernel $kver, qemu $qemu_version)"
