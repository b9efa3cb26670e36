#!/bin/sh
# Part of boot-complete.target: the firewall is loaded and the edge reported ready. A failure
# reboots the box (FailureAction=reboot); systemd-boot counts the try, and after the last one it
# boots the previous version, which systemd-bless-boot had marked good.
set -u
nft list table inet tsunagi >/dev/null 2>&1 || { echo "boot check: the firewall is not loaded"; exit 1; }
for _ in $(seq 200); do
    state=$(systemctl show -P ActiveState tsunagi-edge.service)
    sub=$(systemctl show -P SubState tsunagi-edge.service)
    [ "$state" = active ] && { echo "boot check: tsunagi-edge is ready"; exit 0; }
    [ "$state" = failed ] && break
    sleep 1
done
echo "boot check: tsunagi-edge did not report ready (state $state/$sub)"
exit 1
