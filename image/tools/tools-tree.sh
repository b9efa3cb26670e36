#!/usr/bin/env bash
# Makes (once) the Debian trixie tools tree that builds and boots the appliance image: mkosi 25,
# systemd 257 (repart, ukify, analyze, creds), qemu, OVMF and swtpm. Bookworm's mkosi is too old,
# so everything image-related runs inside this tree through image/tools/in-tree.sh.
#
# Where: $TSUNAGI_IMAGE_WORK (default /var/tmp/tsunagi-image)/tools. A tree that finished has a
# stamp holding the package list it was made from; a changed list or a half-made tree is made again.
set -euo pipefail
WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
TREE=$WORK/tools
PACKAGES=(
    mkosi systemd systemd-repart systemd-ukify systemd-boot systemd-boot-efi systemd-container
    systemd-cryptsetup dosfstools mtools e2fsprogs erofs-utils cryptsetup-bin bubblewrap
    debian-archive-keyring openssl sbsigntool python3-pefile zstd xz-utils cpio kmod uidmap fdisk
    util-linux tpm2-tools swtpm swtpm-tools qemu-system-x86 ovmf nftables iproute2 ca-certificates
)
want="${PACKAGES[*]}"
if [ -f "$TREE/.tsunagi-tools" ] && [ "$(cat "$TREE/.tsunagi-tools")" = "$want" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "tools-tree: making the image tools tree needs root (mmdebstrap --mode=root, chroot)" >&2
    exit 2
fi
command -v mmdebstrap >/dev/null || { echo "tools-tree: mmdebstrap is missing: run ./scripts/setup.sh" >&2; exit 2; }
# A tree that is still mounted (an earlier run killed half-way) must be let go of first.
"$(dirname "$0")/in-tree.sh" --unmount-only || true
rm -rf "$TREE"
mkdir -p "$WORK"
start=$(date +%s)
include=$(IFS=,; echo "${PACKAGES[*]}")
# Installing inside a chroot that has the host's /dev bound would let maintainer scripts change
# the host's device nodes, so every tool is in this one mmdebstrap call and nothing is added later.
mmdebstrap --variant=apt --mode=root --include="$include" trixie "$TREE" \
    "deb http://deb.debian.org/debian trixie main" \
    "deb http://deb.debian.org/debian trixie-updates main" \
    "deb http://security.debian.org/debian-security trixie-security main" >&2
echo "$want" > "$TREE/.tsunagi-tools"
echo "tools-tree: made $TREE in $(( $(date +%s) - start )) s ($(chroot "$TREE" mkosi --version), $(chroot "$TREE" systemctl --version | head -1))" >&2
