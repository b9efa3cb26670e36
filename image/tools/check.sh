#!/usr/bin/env bash
# The image checks CI runs every time (no image build, no boot): with the image's own systemd
# (257, from the trixie tools tree),
#   - every tsunagi unit passes `systemd-analyze verify` with nothing on stderr,
#   - tsunagi-edge.service scores 2.0 or better in `systemd-analyze security --offline=yes`,
#   - the firewall parses with the image's nft,
#   - mkosi accepts the configuration, with and without the test profiles.
# Needs root (the tools tree). Prints one line per check; exits 1 if any failed.
#
#   check.sh [--units DIR] [--mkosi-conf FILE]
#     DIR: check these unit files instead of the image's; FILE: take the initrd drop-ins from this
#     mkosi.conf instead of the image's (both for tests)
set -euo pipefail
UNITS= CONF=
while [ $# -gt 0 ]; do
    case $1 in
        --units) UNITS=$2; shift 2;;
        --mkosi-conf) CONF=$2; shift 2;;
        *) echo "check: unknown argument $1 (--units DIR, --mkosi-conf FILE)" >&2; exit 2;;
    esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
EDGE=${TSUNAGI_EDGE_BIN:-$SRC/target/debug/tsunagi-edge}
THRESHOLD=${TSUNAGI_SECURITY_THRESHOLD:-20}   # 0-100 scale: 20 is a score of 2.0
[ -x "$EDGE" ] || { echo "check: $EDGE is missing: build first (cargo build --workspace)" >&2; exit 2; }
"$HERE/tools-tree.sh"
TREE=$WORK/tools
# One check at a time: they share the scratch folders in the tools tree.
exec 9> "$WORK/check.lock"
flock 9
# The units' programs must exist where the units say: put this checkout's files in the tools
# tree (a scratch tree of our own) exactly where the image has them.
install -m 0755 "$EDGE" "$TREE/usr/bin/tsunagi-edge"
rm -rf "$TREE/usr/lib/tsunagi" "$TREE/etc/tsunagi-check"
cp -r "$SRC/image/mkosi.extra/usr/lib/tsunagi" "$TREE/usr/lib/tsunagi"
cp "$SRC/image/edge.toml" "$TREE/usr/lib/tsunagi/edge.toml"
cp "$SRC"/image/mkosi.profiles/test/extra/usr/lib/tsunagi/* "$TREE/usr/lib/tsunagi/"
mkdir -p "$TREE/etc/tsunagi-check"
cp "${CONF:-$SRC/image/mkosi.conf}" "$WORK/check-mkosi.conf"
if [ -n "$UNITS" ]; then
    cp -P "$UNITS"/tsunagi-* "$TREE/etc/tsunagi-check/"
else
    cp -P "$SRC"/image/mkosi.extra/usr/lib/systemd/system/tsunagi-* "$TREE/etc/tsunagi-check/"
    cp -P "$SRC"/image/mkosi.profiles/test/extra/usr/lib/systemd/system/tsunagi-* "$TREE/etc/tsunagi-check/"
fi
"$HERE/in-tree.sh" bash -uo pipefail -c '
    fails=0
    cd /etc/tsunagi-check
    echo "systemd: $(systemctl --version | head -1)"
    for u in tsunagi-*; do
        # Units refer to each other: verify each from the folder that holds them all.
        err=$(SYSTEMD_UNIT_PATH=/etc/tsunagi-check: systemd-analyze verify --man=no "$u" 2>&1 >/dev/null); rc=$?
        if [ $rc -eq 0 ] && [ -z "$err" ]; then echo "PASS  verify $u"; else echo "FAIL  verify $u (rc $rc): $err"; fails=$((fails+1)); fi
    done
    for u in tsunagi-edge.service; do
        out=$(SYSTEMD_UNIT_PATH=/etc/tsunagi-check: systemd-analyze security --offline=yes --threshold='"$THRESHOLD"' --no-pager "$u" 2>&1); rc=$?
        score=$(echo "$out" | sed -n "s/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p")
        if [ $rc -eq 0 ] && [ -n "$score" ]; then echo "PASS  security $u: exposure $score (2.0 or better required)"; else echo "FAIL  security $u: exposure ${score:-?} (rc $rc)"; echo "$out" | grep -E "✗" | head -20; fails=$((fails+1)); fi
    done
    # As on the image, where /etc starts empty: no /etc/protocols or /etc/services to resolve names.
    for f in /etc/protocols /etc/services; do [ -e $f ] && mount --bind /dev/null $f; done
    if err=$(nft -c -f /usr/lib/tsunagi/firewall.nft 2>&1); then echo "PASS  nft -c firewall.nft ($(nft --version))"; else echo "FAIL  nft -c firewall.nft: $err"; fails=$((fails+1)); fi
    cd /src/image
    summary=
    for p in "" test test,broken; do
        if out=$(mkosi ${p:+--profile=$p} --image-version=0 summary 2>&1); then
            [ -z "$p" ] && summary=$out
            echo "PASS  mkosi summary${p:+ --profile=$p} ($(echo "$out" | grep -c .) lines)"
        else
            echo "FAIL  mkosi summary${p:+ --profile=$p}: $(echo "$out" | tail -5)"; fails=$((fails+1))
        fi
    done
    # The initrd drop-ins that make factory reset work (mkosi.conf, KernelCommandLine): mkosi puts
    # them on the command line, and each decodes to a drop-in that systemd accepts.
    # (/tmp is a fresh tmpfs in the tools tree; $summary is the base summary from above.)
    mkdir /tmp/dropin-check
    printf "[Unit]\nDescription=stand-in for the generated unit\n[Service]\nType=oneshot\nExecStart=/bin/true\n" > "/tmp/dropin-check/systemd-cryptsetup@.service"
    for cred in $(sed -n "s/.*systemd\.set_credential_binary=\(systemd\.unit-dropin\.[^[:space:]]*\).*/\1/p" /work/check-mkosi.conf); do
        name=${cred%%:*} unit=${name#systemd.unit-dropin.}; drop=${unit#*~}; unit=${unit%%~*}
        mkdir -p "/tmp/dropin-check/$unit.d"
        if ! echo "${cred#*:}" | base64 -d > "/tmp/dropin-check/$unit.d/$drop.conf" 2>/dev/null; then
            echo "FAIL  initrd drop-in $name: not base64"; fails=$((fails+1)); continue
        fi
        err=$(SYSTEMD_UNIT_PATH=/tmp/dropin-check: systemd-analyze verify --man=no "$unit" 2>&1 >/dev/null); rc=$?
        if [ $rc -ne 0 ] || [ -n "$err" ]; then echo "FAIL  initrd drop-in for $unit (rc $rc): $err"; fails=$((fails+1)); continue; fi
        case "$summary" in *" systemd.set_credential_binary=$cred"*) ;; *) echo "FAIL  initrd drop-in $name: not on the UKI command line mkosi makes"; fails=$((fails+1)); continue;; esac
        echo "PASS  initrd drop-in for $unit: $(grep -v "^\[" "/tmp/dropin-check/$unit.d/$drop.conf" | tr "\n" " ")"
    done
    if ! grep -q "^After=systemd-repart.service" "/tmp/dropin-check/systemd-cryptsetup@root.service.d/"*.conf 2>/dev/null; then
        echo "FAIL  the root is not unlocked after systemd-repart (factory reset would mount the old root)"; fails=$((fails+1))
    fi
    exit $((fails > 0))
'
