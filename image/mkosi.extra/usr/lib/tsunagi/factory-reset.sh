#!/bin/sh
# Factory reset (disposal, or a box going to another facility): asks systemd-repart to delete the
# root partition at the next boot (repart.d/40-root.conf has FactoryReset=yes) and reboots. The
# box comes back with a new, empty, TPM-sealed root: no store, no store key, no identity, no TLS
# key; it shows the enrolment page again. /usr, the A/B slots and the ESP are untouched.
# Revoke the box's certificate on the hub first; clear the TPM in the firmware afterwards.
#
#   /usr/lib/tsunagi/factory-reset.sh --yes
# NOT WORKING YET with systemd 257: the initrd mounts the old root before systemd-repart
# re-creates it, and the box ends in emergency mode (docs/image.md, "Factory reset").
set -eu
VAR=/sys/firmware/efi/efivars/FactoryReset-8cf2644b-4b0b-428f-9387-6d876050dc67
if [ "${TSUNAGI_FACTORY_RESET_TEST:-}" != 1 ]; then
    echo "factory-reset: does not work yet on this image (see docs/image.md); refusing" >&2
    exit 3
fi
if [ "${1:-}" != --yes ]; then
    echo "factory-reset: this erases everything this box holds (the facility's store, its keys, its identity)." >&2
    echo "factory-reset: revoke its certificate on the hub first, then run: $0 --yes" >&2
    exit 2
fi
systemd-repart --can-factory-reset >/dev/null || { echo "factory-reset: no partition on this disk is marked for factory reset; nothing done" >&2; exit 1; }
# EFI variable: attributes (non-volatile, boot and run-time access), then "yes" in UTF-16LE.
printf '\007\000\000\000y\000e\000s\000' > "$VAR"
echo "factory-reset: requested; the box restarts and erases its data partition" >&2
systemctl reboot
