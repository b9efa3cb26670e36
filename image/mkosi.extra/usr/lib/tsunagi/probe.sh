#!/bin/sh
# Runs as root every minute (tsunagi-probe.timer): records, for the unprivileged edge, the
# outputs of the commands its posture checks read (policy.probe_dir; file names as in
# edge/src/policy/system/), then refreshes the firewall's address sets from edge.toml.
# Each file is written whole and renamed, so the edge never reads half an output.
set -u
OUT=${1:-/run/tsunagi-probe}
CONFIG=${TSUNAGI_CONFIG:-/usr/lib/tsunagi/edge.toml}
STATE=/var/lib/tsunagi
mkdir -p "$OUT"
record() { # name command...
    name=$1; shift
    if LC_ALL=C timeout 20 "$@" > "$OUT/.$name.tmp" 2>/dev/null; then
        chmod 0644 "$OUT/.$name.tmp"; mv "$OUT/.$name.tmp" "$OUT/$name.txt"
    else
        rm -f "$OUT/.$name.tmp" "$OUT/$name.txt"   # a missing file is an error the edge reports
    fi
}
record lsblk lsblk -J -o NAME,TYPE,RO,MOUNTPOINTS
record findmnt-state findmnt -n -o TARGET -T "$STATE"
record nft-ruleset nft list ruleset
record timedatectl timedatectl show -p NTP -p NTPSynchronized
record ss-listening ss -H -ltnu
# `iw dev` fails with "nl80211 not found" on a box with no Wi-Fi driver at all: that is a box
# without Wi-Fi (the edge reads an empty list as wired only), not an error.
if err=$(LC_ALL=C timeout 20 iw dev 2>&1 >/dev/null) || echo "$err" | grep -q "nl80211 not found"; then
    record iw-dev iw dev || true
    [ -f "$OUT/iw-dev.txt" ] || { : > "$OUT/.iw-dev.tmp"; chmod 0644 "$OUT/.iw-dev.tmp"; mv "$OUT/.iw-dev.tmp" "$OUT/iw-dev.txt"; }
else
    rm -f "$OUT/iw-dev.txt"
fi
for i in $(iw dev 2>/dev/null | mawk '$1 == "Interface" {print $2}'); do
    record iw-scan iw dev "$i" scan
    record iw-link iw dev "$i" link
done
# The hub and the broker, from the verity-protected configuration: host:port of each URL.
endpoints=$(sed -n -E 's#^[[:space:]]*(url|broker)[[:space:]]*=[[:space:]]*"[a-z]+://([^/"]+).*#\2#p' "$CONFIG")
exec /usr/lib/tsunagi/netsets.sh $endpoints >/dev/null
