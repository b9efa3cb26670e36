#!/usr/bin/env bash
# Boots an appliance disk under qemu (software emulation: q35, OVMF with Secure Boot, swtpm as
# the TPM2) inside the tools tree, with the serial console written to a log. Runs in the
# foreground until the guest powers off or the time limit; reboots stay inside one run.
#
#   vm.sh DISK VARS TPM_DIR LOG [UPDATE_DISK]
# Paths are under $TSUNAGI_IMAGE_WORK. Environment: VM_TIMEOUT (s, default 900), VM_HOSTFWD
# (qemu hostfwd rules for the user network, for example
# "hostfwd=tcp:127.0.0.1:18080-:8080"), VM_MONITOR (a unix socket path for the qemu monitor).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
inner() { echo "/work/${1#$WORK/}"; }
disk=$(inner "$1") vars=$(inner "$2") tpm=$(inner "$3") log=$(inner "$4")
upd=; [ -n "${5:-}" ] && upd=$(inner "$5")
mon=; [ -n "${VM_MONITOR:-}" ] && mon=$(inner "$VM_MONITOR")
mkdir -p "$3"
exec "$HERE/in-tree.sh" bash -euo pipefail -c '
    disk=$1 vars=$2 tpm=$3 log=$4 upd=$5 timeout=$6 fwd=$7 mon=$8
    swtpm socket --tpm2 --tpmstate dir="$tpm" --ctrl type=unixio,path="$tpm/sock" \
        --flags startup-clear --terminate --log file="$tpm/log",level=1 &
    for _ in $(seq 50); do [ -S "$tpm/sock" ] && break; sleep 0.1; done
    extra=()
    [ -n "$upd" ] && extra+=(-drive "file=$upd,format=raw,if=virtio,readonly=on")
    [ -n "$mon" ] && extra+=(-monitor "unix:$mon,server,nowait")
    net="user,id=n0${fwd:+,$fwd}"
    set +e
    timeout "$timeout" qemu-system-x86_64 -machine q35,smm=on -accel tcg -cpu max -m 2048 -smp 2 \
        -display none -no-user-config -nodefaults -serial "file:$log" \
        -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd \
        -drive if=pflash,format=raw,unit=1,file="$vars" \
        -chardev socket,id=chrtpm,path="$tpm/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0 \
        -drive "file=$disk,format=raw,if=virtio" \
        -netdev "$net" -device virtio-net-pci,netdev=n0 \
        "${extra[@]}"
    rc=$?
    wait
    exit $rc
' vm "$disk" "$vars" "$tpm" "$log" "$upd" "${VM_TIMEOUT:-900}" "${VM_HOSTFWD:-}" "$mon"
