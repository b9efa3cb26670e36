#!/usr/bin/env bash
# Builds the appliance image (`just image`): tsunagi-edge from this workspace, the region's
# settings, then mkosi in the trixie tools tree. Output: $WORK/out/<version>/ with the disk
# image, the signed UKI, the split /usr partitions for sysupdate and SHA256SUMS.
#
# Settings (environment):
#   TSUNAGI_IMAGE_VERSION   the image version (default: the workspace version)
#   TSUNAGI_REGION          a TOML file with the region's hub, root fingerprint and broker:
#                             hub_url = "https://hub.example.jp:8443"
#                             fingerprint = "sha256 of the network root, as `tsunagi-hub ca show` prints it"
#                             broker = "mqtts://hub.example.jp:8883"       (optional)
#                           without it the image is built, but cannot enrol until rebuilt with one
#   TSUNAGI_IMAGE_KEYS      folder with the signing key and certificate (db.key, db.crt) for
#                           Secure Boot and the verity signature; default $WORK/keys, made on
#                           first use (a development key: production keys stay off build hosts)
#   TSUNAGI_IMAGE_PROFILE   mkosi profiles to add (test, broken: see image/mkosi.profiles/)
#   TSUNAGI_EDGE_BIN        a tsunagi-edge binary to use instead of building one
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
VERSION=${TSUNAGI_IMAGE_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/Cargo.toml" | head -1)}
KEYS=${TSUNAGI_IMAGE_KEYS:-$WORK/keys}
PROFILE=${TSUNAGI_IMAGE_PROFILE:-}
case "$VERSION" in ''|*[!0-9A-Za-z.~^+-]*) echo "build: bad image version '$VERSION' (digits, letters and . ~ ^ + - only)" >&2; exit 2;; esac

"$HERE/tools-tree.sh"
start=$(date +%s)

# 1. tsunagi-edge, stripped (debug info stays on the build host).
if [ -z "${TSUNAGI_EDGE_BIN:-}" ]; then
    (cd "$SRC" && cargo build --release -p tsunagi-edge --bin tsunagi-edge)
    TSUNAGI_EDGE_BIN=$SRC/target/release/tsunagi-edge
fi
EXTRA=$WORK/extra/$VERSION
rm -rf "$EXTRA"
install -D -m 0755 "$TSUNAGI_EDGE_BIN" "$EXTRA/usr/bin/tsunagi-edge"
strip "$EXTRA/usr/bin/tsunagi-edge"

# 2. The edge's configuration: the image's defaults and the region's hub, root and broker.
hub_url= fingerprint= broker=
if [ -n "${TSUNAGI_REGION:-}" ]; then
    get() { sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"([^\"]*)\".*/\1/p" "$TSUNAGI_REGION" | head -1; }
    hub_url=$(get hub_url) fingerprint=$(get fingerprint) broker=$(get broker)
    [ -n "$hub_url" ] && [ -n "$fingerprint" ] || { echo "build: $TSUNAGI_REGION must set hub_url and fingerprint" >&2; exit 2; }
else
    echo "build: no TSUNAGI_REGION: this image shows how to enrol but has no hub to enrol with" >&2
fi
mkdir -p "$EXTRA/usr/lib/tsunagi"
{
    cat "$SRC/image/edge.toml"
    if [ -n "$hub_url" ]; then
        printf '\n[hub]\nurl = "%s"\nfingerprint = "%s"\n' "$hub_url" "$fingerprint"
    fi
    if [ -n "$broker" ]; then
        printf '\n[telemetry]\nbroker = "%s"\n' "$broker"
    fi
} > "$EXTRA/usr/lib/tsunagi/edge.toml"
# The update stamp the edge's "updates" check reads: when this image was built.
echo "$VERSION" > "$EXTRA/usr/lib/tsunagi/image-version"

# 3. Signing keys (Secure Boot db and the verity root-hash signature).
if [ ! -f "$KEYS/db.key" ]; then
    mkdir -p "$KEYS"; chmod 700 "$KEYS"
    openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tsunagi development image key/" \
        -keyout "$KEYS/db.key" -out "$KEYS/db.crt" 2>/dev/null
    chmod 600 "$KEYS/db.key"
    echo "build: made a development signing key in $KEYS" >&2
fi
rel() { echo "/work/${1#$WORK/}"; }   # a path under $WORK as the tools tree sees it
[ "${KEYS#$WORK/}" != "$KEYS" ] || { mkdir -p "$WORK/keys-in"; cp "$KEYS/db.key" "$KEYS/db.crt" "$WORK/keys-in/"; KEYS=$WORK/keys-in; }

# 4. mkosi.
OUT=$WORK/out/$VERSION
rm -rf "$OUT"; mkdir -p "$OUT" "$WORK/mkosi-cache" "$WORK/mkosi-ws"
profiles=()
[ -n "$PROFILE" ] && profiles=(--profile="$PROFILE")
"$HERE/in-tree.sh" sh -c 'cd /src/image && exec mkosi "$@"' mkosi --force \
    --image-version="$VERSION" \
    --output-dir="$(rel "$OUT")" \
    --cache-directory="$(rel "$WORK/mkosi-cache")" \
    --workspace-directory="$(rel "$WORK/mkosi-ws")" \
    --extra-tree="$(rel "$EXTRA")" \
    --secure-boot-key="$(rel "$KEYS/db.key")" --secure-boot-certificate="$(rel "$KEYS/db.crt")" \
    --verity-key="$(rel "$KEYS/db.key")" --verity-certificate="$(rel "$KEYS/db.crt")" \
    "${profiles[@]}" build >&2
ls "$OUT"/tsunagi_"$VERSION".raw "$OUT"/tsunagi_"$VERSION".efi >/dev/null
echo "image $VERSION built in $(( $(date +%s) - start )) s: $OUT" >&2
echo "$OUT"
