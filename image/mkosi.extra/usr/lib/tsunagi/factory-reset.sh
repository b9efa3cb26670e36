#!/bin/sh
# Factory reset (disposal, or a box going to another facility): asks systemd-repart to delete the
# root partition at the next boot (repart.d/40-root.conf has FactoryReset=yes) and reboots. The
# box comes back with a new, empty, TPM-sealed root: no store, no store key, no identity, no TLS
# key; it shows the enrolment page again. /usr, the A/B slots and the ESP are untouched.
# In the initrd the root is unlocked only after systemd-repart has run (the drop-ins on
# mkosi.conf's KernelCommandLine=), so nothing has the old root open while it is erased.
# repart clears the request itself, so the reset happens once.
# Revoke the box's certificate on the hub first.
#
#   /usr/lib/tsunagi/factory-reset.sh --yes
set -eu
VAR=/sys/firmware/efi/efivars/FactoryReset-8cf2644b-4b0b-428f-9387-6d876050dc67
if [ "${1:-}" != --yes ]; then
    echo "factory-reset: this erases everything this box holds (the facility's store, its keys, its identity)." >&2
    echo "factory-reset: revoke its certificate on the hub first, then run: $0 --yes" >&2
    exit 2
fi
systemd-repart --can-factory-reset >/dev/null || { echo "factory-reset: no partition on this disk is marked for factory reset; nothing done" >&2; exit 1; }
# EFI variable: attributes (non-volatile, boot and run-time access), then "yes" in UTF-16LE.
printf '\007\000\000\000y\000e\000s\000' > "$VAR" || { echo "factory-reset: could not set the FactoryReset EFI variable (run it as root); nothing done" >&2; exit 1; }
echo "factory-reset: requested; the box restarts and erases its data partition" >&2
systemctl reboot
