#!/usr/bin/env bash
# Build the Debian 12 systemd base image that Molecule and `make demo` boot.
# No registry is reachable, so the root file system comes from debootstrap
# and is turned into an image with `docker import`. The image is cached by
# tag; pass --rebuild (or REBUILD=1) to make it again.
set -euo pipefail

IMAGE="${SHOESTRING_IMAGE:-shoestring/debian12-systemd:1}"
SUITE=bookworm
REBUILD="${REBUILD:-0}"
[[ "${1:-}" == "--rebuild" ]] && REBUILD=1

if [[ "$REBUILD" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "image $IMAGE is cached (pass --rebuild to make it again)"
  exit 0
fi

# Use the same mirror the host's apt uses, so the build works wherever apt does.
MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

ROOTFS="$(mktemp -d /var/tmp/shoestring-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE from $MIRROR into $ROOTFS"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,ca-certificates,procps,gnupg \
  "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null

# Security updates come from the same archive host as the host's apt sources.
cp /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/debian.sources"
rm -f "$ROOTFS/etc/apt/sources.list"

# Trust what the build host trusts (a TLS-inspecting proxy's CA, if any), and
# let pip use the system bundle, so apt and pip inside the image reach the same
# package registries the host reaches.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt \
  "$ROOTFS/usr/local/share/ca-certificates/build-host-bundle.crt"
chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || true
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOTFS/etc/pip.conf"

# Units that cannot work in a container (no ttys, no kernel modules to load).
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
            systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount \
            systemd-remount-fs.service; do
  ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
echo "shoestring" > "$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/machine-id" && touch "$ROOTFS/etc/machine-id"
chroot "$ROOTFS" apt-get clean
# Keep the package lists: a fresh image can install packages at once.
chroot "$ROOTFS" apt-get update -qq

tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
