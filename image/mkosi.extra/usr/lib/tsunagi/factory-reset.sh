#!/bin/sh
# Factory reset (disposal, or a box going to another facility): boots once into the UKI's
# "factory reset" entry (mkosi.uki-profiles/factory-reset.conf: systemd.factory_reset=1), where
# systemd-repart deletes the root partition (repart.d/40-root.conf has FactoryReset=yes) and makes
# a new one. The box comes back with a new, empty, TPM-sealed root: no store, no store key, no
# identity, no TLS key; it shows the enrolment page again. /usr, the A/B slots and the ESP are
# untouched. The same entry can be chosen by hand in the boot menu (docs/image.md).
# Revoke the box's certificate on the hub first.
#
#   /usr/lib/tsunagi/factory-reset.sh --yes
set -eu
if [ "${1:-}" != --yes ]; then
    echo "factory-reset: this erases everything this box holds (the facility's store, its keys, its identity)." >&2
    echo "factory-reset: revoke its certificate on the hub first, then run: $0 --yes" >&2
    exit 2
fi
systemd-repart --can-factory-reset >/dev/null || { echo "factory-reset: no partition on this disk is marked for factory reset; nothing done" >&2; exit 1; }
# The factory-reset entries the boot loader offers (one per installed version), and the one of
# the version running now when there is one.
entries=$(bootctl list --no-pager 2>/dev/null | mawk 'BEGIN {RS = ""} {
    n = split($0, L, "\n"); f = 0; id = ""
    for (i = 1; i <= n; i++) { if (L[i] ~ /^ *title:.*factory reset/) f = 1; if (L[i] ~ /^ *id:/) { split(L[i], w, " "); id = w[2] } }
    if (f && id != "") print id }')
current=$(bootctl status --no-pager 2>/dev/null | mawk -F': *' '/Current Entry/ {print $2; exit}')
entry=
for e in $entries; do
    [ -z "$entry" ] && entry=$e
    case "$e" in "$current"*) entry=$e; break;; esac
done
[ -n "$entry" ] || { echo "factory-reset: the boot loader offers no factory-reset entry (is this an image from before it?); nothing done" >&2; exit 1; }
bootctl set-oneshot "$entry"
echo "factory-reset: requested (boot entry $entry once); the box restarts and erases its data partition" >&2
systemctl reboot
