#!/bin/sh
# TEST ONLY. Lines start with TSUNAGI-TEST so image/tools/image-test.sh can find them.
say() { echo "TSUNAGI-TEST $*"; }
. /usr/lib/os-release
say "version=$IMAGE_VERSION"
say "edge=$(systemctl show -P ActiveState tsunagi-edge.service) status=$(systemctl show -P StatusText tsunagi-edge.service)"
say "boot-complete=$(systemctl show -P ActiveState boot-complete.target) bless=$(systemctl show -P ActiveState systemd-bless-boot.service)"
src=$(findmnt -n -o SOURCE /)
say "root=$src type=$(lsblk -n -d -o TYPE "$src") fstype=$(findmnt -n -o FSTYPE /)"
# The partition under the dm-crypt device (lsblk -s walks from the device to its parents).
dev=$(lsblk -n -s -l -o PATH,TYPE "$src" | mawk '$2 == "part" {print $1; exit}')
say "root-luks=$dev tokens=$(systemd-cryptenroll "$dev" 2>/dev/null | mawk 'NR>1 {print $2}' | sort | tr '\n' ',')"
say "usr=$(findmnt -n -o SOURCE /usr) fstype=$(findmnt -n -o FSTYPE /usr) options=$(findmnt -n -o OPTIONS /usr | cut -d, -f1)"
say "firewall-input=$(nft list chain inet tsunagi input 2>/dev/null | grep -o 'policy [a-z]*') firewall-output=$(nft list chain inet tsunagi output 2>/dev/null | grep -o 'policy [a-z]*')"
id=/var/lib/private/tsunagi/identity
[ -f $id/identity.pem ] && say "tls-key=$( [ -s $id/identity.tpm.json ] && ! grep -q 'PRIVATE KEY' $id/identity.pem && echo tpm || echo file)"
say "store-key-credential=$(test -s /var/lib/tsunagi-keys/store-key.cred && echo sealed || echo missing) sha256=$(sha256sum /var/lib/tsunagi-keys/store-key.cred 2>/dev/null | cut -c1-16)"
say "secure-boot=$(bootctl status 2>/dev/null | mawk -F': *' '/Secure Boot/ {print $2; exit}')"
say "entries=$(ls /efi/EFI/Linux/ /boot/EFI/Linux/ 2>/dev/null | grep '\.efi$' | sort | tr '\n' ' ')"
say "current-entry=$(bootctl status 2>/dev/null | mawk -F': *' '/Current Entry/ {print $2; exit}')"
say "probe=$(ls /run/tsunagi-probe 2>/dev/null | tr '\n' ' ')"
say "efivar-factory-reset=$(test -e /sys/firmware/efi/efivars/FactoryReset-8cf2644b-4b0b-428f-9387-6d876050dc67 && echo present || echo absent)"
# The update, when a disk labelled TSUNAGIUPD is attached.
for _ in $(seq 20); do [ -e /dev/disk/by-label/TSUNAGIUPD ] && break; sleep 1; done
if [ ! -e /dev/disk/by-label/TSUNAGIUPD ]; then say "done"; exit 0; fi
mkdir -p /run/tsunagi-update
mount -o ro /dev/disk/by-label/TSUNAGIUPD /run/tsunagi-update
if [ "$(cat /run/tsunagi-update/action 2>/dev/null)" = factory-reset ]; then
    if [ -f $id/identity.pem ]; then
        say "factory-reset-requested"
        /usr/lib/tsunagi/factory-reset.sh --yes 2>&1 | sed 's/^/TSUNAGI-TEST /'
        exit 0
    fi
    say "factory-reset-done enrolled=no"; say "done"; exit 0
fi
offered=$(cat /run/tsunagi-update/version)
say "update-offered=$offered"
if [ "$offered" = "$IMAGE_VERSION" ]; then say "update-running"; say "done"; exit 0; fi
if ls /efi/EFI/Linux/ /boot/EFI/Linux/ 2>/dev/null | grep -q "^tsunagi_${offered}[+.]"; then
    # Installed before, and we are not running it: it failed its tries and was rolled back.
    say "update-rolled-back from=$offered entries=$(ls /efi/EFI/Linux/ /boot/EFI/Linux/ 2>/dev/null | grep '\.efi$' | tr '\n' ' ')"
    say "done"; exit 0
fi
/usr/lib/systemd/systemd-sysupdate update 2>&1 | sed 's/^/TSUNAGI-TEST sysupdate: /'
say "update-installed=$offered; rebooting"
systemctl reboot
