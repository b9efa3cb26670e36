#!/usr/bin/env bash
# Runs a command inside the trixie tools tree (image/tools/tools-tree.sh), in a private mount
# namespace so nothing stays mounted when it ends, even if it is killed. The repository is at /src
# inside, the work folder ($TSUNAGI_IMAGE_WORK) at /work.
#
#   image/tools/in-tree.sh [--unmount-only] COMMAND [ARGS...]
set -euo pipefail
WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
TREE=$WORK/tools
SRC=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${1:-}" = --unmount-only ]; then
    exit 0   # the namespace is private: nothing ever stays mounted on the host
fi
[ -f "$TREE/.tsunagi-tools" ] || { echo "in-tree: no tools tree at $TREE: run image/tools/tools-tree.sh" >&2; exit 2; }
mkdir -p "$TREE/src" "$TREE/work"
exec unshare --mount --propagation private -- bash -euo pipefail -c '
    T=$1 S=$2 W=$3; shift 3
    mount --bind "$T" "$T"          # mkosi-sandbox needs the root to be a mount point
    mount -t proc proc "$T/proc"
    mount -t sysfs sysfs "$T/sys"
    mount --rbind /dev "$T/dev"
    mount -t tmpfs tmpfs "$T/tmp"
    mount --bind "$S" "$T/src"
    mount --bind "$W" "$T/work"
    cp /etc/resolv.conf "$T/etc/resolv.conf" 2>/dev/null || true
    exec chroot "$T" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8 \
        ${SOURCE_DATE_EPOCH:+SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH} "$@"
' in-tree "$TREE" "$SRC" "$WORK" "$@"
