#!/usr/bin/env bash
# Builds the lab guest (issue #10): Debian's own kernel and busybox-static, plus our static
# workload binary (guest/), as a direct-boot kernel + initramfs pair.
#
#   scripts/build-guest.sh [OUT_DIR]      # default target/guest → OUT_DIR/vmlinuz, OUT_DIR/initrd.img
#
# Boot it: qemu-system-x86_64 -accel kvm|tcg -m 256 -nographic -kernel OUT/vmlinuz -initrd OUT/initrd.img \
#   -append "console=ttyS0 quiet panic=-1 amvm.mode=cpu amvm.load=50"
# The guest prints `amvm-heartbeat …` lines on its console and takes `load N`, `dirty MBPS`,
# `mode idle|cpu|memory|io`, `quit` on it (guest/src/main.rs). Packages are downloaded with
# `apt-get download` (nothing is installed) and cached in OUT_DIR/debs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/guest}
mkdir -p "$OUT/debs"
OUT=$(cd "$OUT" && pwd)
CACHE=$OUT/debs

need() { command -v "$1" >/dev/null || { echo "build-guest: $1 is missing (Debian package $2)" >&2; exit 1; }; }
need apt-get apt
need dpkg-deb dpkg
need gzip gzip

# 1. The workload, linked statically against glibc (std only, no other dependency).
echo "build-guest: workload (static)" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked -p amvm-guest \
  --target x86_64-unknown-linux-gnu --target-dir target/guest-build
WORKLOAD=target/guest-build/x86_64-unknown-linux-gnu/release/amvm-workload
if ldd "$WORKLOAD" 2>&1 | grep -q "=>"; then
  echo "build-guest: $WORKLOAD is not static" >&2; exit 1
fi

# 2. Debian's kernel and busybox-static, downloaded once.
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then
  apt-get update -qq
  kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
fetch() {
  local pkg=$1
  if ! ls "$CACHE/${pkg}"_*.deb >/dev/null 2>&1; then
    echo "build-guest: downloading $pkg" >&2
    (cd "$CACHE" && { apt-get download -qq "$pkg" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$pkg"; }; })
  fi
  ls "$CACHE/${pkg}"_*.deb | head -1
}
kdeb=$(fetch "$kernel_pkg")
bdeb=$(fetch busybox-static)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"
cp "$(ls "$work"/kernel/boot/vmlinuz-* | head -1)" "$OUT/vmlinuz.tmp"
BUSYBOX=$work/busybox/bin/busybox

# 3. The initramfs: busybox, the workload, and an init that starts it on the console.
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp}
cp "$BUSYBOX" "$root/bin/busybox"
cp "$WORKLOAD" "$root/bin/amvm-workload"
# virtio-blk for hot-plugged volumes (issue #11): Debian builds virtio as modules; loaded by init
# in dependency order (the package ships no modules.dep).
mkdir -p "$root/lib/modules"
VIRTIO_MODS="virtio/virtio_ring.ko virtio/virtio.ko virtio/virtio_pci_modern_dev.ko virtio/virtio_pci_legacy_dev.ko virtio/virtio_pci.ko block/virtio_blk.ko"
for m in $VIRTIO_MODS; do
  f=$(ls "$work"/kernel/lib/modules/*/kernel/drivers/"$m"* 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "build-guest: kernel module $m not found in $kdeb" >&2; exit 1; }
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$(basename "$m")" ;;
    *.ko.zst) zstd -dcq "$f" > "$root/lib/modules/$(basename "$m")" ;;
    *) cp "$f" "$root/lib/modules/$(basename "$m")" ;;
  esac
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
set --
for w in $(cat /proc/cmdline); do
  case "$w" in
    amvm.mode=*) set -- "$@" --mode "${w#amvm.mode=}" ;;
    amvm.load=*) set -- "$@" --load "${w#amvm.load=}" ;;
    amvm.dirty=*) set -- "$@" --dirty-mbps "${w#amvm.dirty=}" ;;
    amvm.hot=*) set -- "$@" --hot "${w#amvm.hot=}" ;;
    amvm.mem=*) set -- "$@" --mem-mb "${w#amvm.mem=}" ;;
    amvm.heartbeat=*) set -- "$@" --heartbeat-ms "${w#amvm.heartbeat=}" ;;
  esac
done
echo "amvm-guest up: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU, $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
/bin/amvm-workload "$@"
echo "amvm-guest: workload ended ($?), powering off"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT/initrd.img.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "build-guest: $OUT/vmlinuz ($(basename "$kdeb" .deb)), $OUT/initrd.img ($(du -k "$OUT/initrd.img" | cut -f1) KiB)" >&2
