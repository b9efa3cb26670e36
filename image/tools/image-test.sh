#!/usr/bin/env bash
# `just image-test`: builds three versions of the appliance image and boots them under qemu
# (software emulation, OVMF with Secure Boot, swtpm), against a real hub on this machine's
# loopback (the guest reaches it as 10.0.2.2 through qemu's user network).
#
#   1. first boot: Secure Boot keys enrolled, root created by systemd-repart and encrypted with
#      the TPM2, the firewall loaded, the edge ready and showing its enrolment page; the page is
#      used from this machine as a clinic's browser would; the box enrols, restores the copy the
#      hub holds of the facility (written by a first "old" appliance on this machine), and serves
#      the portal over its LAN certificate;
#   2. Secure Boot refuses the same disk with one byte of the kernel image changed;
#   3. an update to version 2 is installed by systemd-sysupdate into the free slot, boots, and is
#      marked good by systemd-bless-boot;
#   4. a broken version 3 (its edge does not start) fails its boot tries and the box rolls back to
#      version 2 by itself;
#   5. a factory reset erases the enrolled box's encrypted root and brings back the enrolment page.
# Timings go to $WORK/test/timings (build, first boot, update) for BENCHMARKS.md.
#
# TSUNAGI_IMAGE_TEST_STAGES picks stages while working on one ("1 5": first boot, then the
# factory reset; stage 1 always runs, the others need its enrolled box). Only a run of all five
# writes BENCHMARKS.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
export TSUNAGI_IMAGE_WORK=${TSUNAGI_IMAGE_WORK:-/var/tmp/tsunagi-image}
WORK=$TSUNAGI_IMAGE_WORK
T=$WORK/test
BASE=${TSUNAGI_TEST_VERSION:-$(date -u +%Y%m%d)}
V1=$BASE.1 V2=$BASE.2 V3=$BASE.3
FACILITY=3719900001
HUB_PORT=${TSUNAGI_TEST_HUB_PORT:-18443}
PLAIN_FWD=${TSUNAGI_TEST_PLAIN_PORT:-18080}
LAN_FWD=${TSUNAGI_TEST_LAN_PORT:-18444}
STAGES=${TSUNAGI_IMAGE_TEST_STAGES:-1 2 3 4 5}
want() { case " 1 $STAGES " in *" $1 "*) return 0;; esac; return 1; }
all_stages=yes; for n in 1 2 3 4 5; do want $n || all_stages=no; done
if want 4 && ! want 3; then echo "image-test: stage 4 rolls back to stage 3's update; ask for both" >&2; exit 2; fi
fails=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; fails=$((fails + 1)); }
check() { # description, command...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
timing() { echo "$1 $2" >> "$T/timings"; echo "  ($1: $2 s)"; }
has() { grep -a -q -- "$2" "$1"; }
line() { grep -a -- "$2" "$1" | tail -1; }
wait_for() { # log pattern timeout-seconds [pid]
    local end=$(( $(date +%s) + $3 ))
    while [ "$(date +%s)" -lt $end ]; do
        has "$1" "$2" && return 0
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then has "$1" "$2"; return; fi
        sleep 2
    done
    return 1
}
last_has() { grep -a -- "$2" "$1" | tail -1 | grep -q -- "$3"; }   # the last LOG line with KEY holds WANT
# boot NAME TIMEOUT [UPDATE_DISK] [HOSTFWD]: the test disk in a VM, in the background ($vm);
# the serial console goes to $T/NAME.log.
boot() {
    VM_TIMEOUT=$2 VM_MONITOR=$T/$1.mon VM_HOSTFWD=${4:-} "$HERE/vm.sh" "$T/disk.raw" "$T/vars.fd" "$T/tpm" "$T/$1.log" ${3:+"$T/$3"} > "$T/$1.vm" 2>&1 &
    vm=$!
}
# halt NAME ok|failed: a clean power-off once the awaited point was reached, else kill it.
halt() {
    if [ "$2" = ok ]; then powerdown "$T/$1.mon" $vm; else kill $vm 2>/dev/null || true; kill_vms; fi
    wait $vm 2>/dev/null || true
}
powerdown() { # monitor socket, qemu pid
    python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"system_powerdown\n")' "$1" 2>/dev/null || true
    for _ in $(seq 120); do kill -0 "$2" 2>/dev/null || return 0; sleep 1; done
    kill "$2" 2>/dev/null || true; kill_vms
}

rm -rf "$T"; mkdir -p "$T"
# Three images, a 6 GiB test disk (sparse) and the update disks need about 12 GiB at the peak.
free_gb=$(( $(df --output=avail -k "$WORK" | tail -1) / 1048576 ))
[ "$free_gb" -ge 12 ] || { echo "image-test: only $free_gb GiB free under $WORK; it needs about 12 GiB (remove old versions in $WORK/out)" >&2; exit 2; }
hub_pid=; old_pid=
# qemu and swtpm run inside the tools tree, where this run's folder is /work/test.
kill_vms() { pkill -f "qemu-system-x86_64 .*file:/work/test/" 2>/dev/null || true; pkill -f "swtpm socket .*dir=/work/test/" 2>/dev/null || true; }
cleanup() { kill $hub_pid $old_pid 2>/dev/null || true; kill_vms; }
trap cleanup EXIT

echo "== binaries"
(cd "$SRC" && cargo build --release -p tsunagi-hub -p tsunagi-edge -p tests --bin tsunagi-hub --bin tsunagi-edge --bin ssmix2-gen)
bin=$SRC/target/release

echo "== hub on 127.0.0.1:$HUB_PORT (the guest's 10.0.2.2:$HUB_PORT), and the facility's old appliance"
export TSUNAGI_HUB_DATA=$T/hub
"$bin/tsunagi-hub" keygen >/dev/null
"$bin/tsunagi-hub" ca init --network "tsunagi image test" >/dev/null
fingerprint=$("$bin/tsunagi-hub" ca fingerprint)
"$bin/tsunagi-hub" serve --listen 127.0.0.1:$HUB_PORT --operator-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --name 10.0.2.2 --name 127.0.0.1 > "$T/hub.out" 2> "$T/hub.log" &
hub_pid=$!
for _ in $(seq 100); do has "$T/hub.out" listening && break; sleep 0.1; done
has "$T/hub.out" listening || { cat "$T/hub.log"; exit 1; }
# The old appliance: a small clinic, enrolled, synced; its copy is what the new box restores.
"$bin/ssmix2-gen" --out "$T/clinic" --patients 40 --days 30 --seed 7 >/dev/null
mkdir -p "$T/old"
cat > "$T/old.toml" <<TOML
state_dir = "$T/old"
key_file = "$T/old/store.key"
[ingest]
roots = ["$T/clinic/standard", "$T/clinic/extended"]
[hub]
url = "https://127.0.0.1:$HUB_PORT"
TOML
"$bin/tsunagi-edge" keygen --out "$T/old/store.key" >/dev/null
token=$("$bin/tsunagi-hub" token create --facility $FACILITY --name "イメージ試験診療所" | awk '/^token:/{print $2}')
"$bin/tsunagi-edge" enroll --config "$T/old.toml" --hub "https://127.0.0.1:$HUB_PORT" --token "$token" --ca-fingerprint "$fingerprint" --appliance old-box >/dev/null
"$bin/tsunagi-edge" ingest --config "$T/old.toml" --root "$T/clinic/standard" --root "$T/clinic/extended" --once >/dev/null
"$bin/tsunagi-edge" sync --config "$T/old.toml" > "$T/old-sync.out" 2>&1
old_head=$("$bin/tsunagi-edge" status --config "$T/old.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["hub"]["seq"])')
echo "  the hub holds facility $FACILITY up to segment $old_head"
token=$("$bin/tsunagi-hub" token create --facility $FACILITY --name "イメージ試験診療所" | awk '/^token:/{print $2}')

versions=$V1; want 3 && versions="$versions $V2"; want 4 && versions="$versions $V3"
echo "== build $versions (the last a broken one when stage 4 runs)"
cat > "$T/region.toml" <<TOML
hub_url = "https://10.0.2.2:$HUB_PORT"
fingerprint = "$fingerprint"
TOML
for v in $versions; do
    profile=test; [ $v = $V3 ] && profile=test,broken
    s=$(date +%s)
    TSUNAGI_REGION=$T/region.toml TSUNAGI_IMAGE_VERSION=$v TSUNAGI_IMAGE_PROFILE=$profile TSUNAGI_EDGE_BIN=$bin/tsunagi-edge \
        "$HERE/build.sh" > "$T/build-$v.out" 2> "$T/build-$v.log" || { tail -30 "$T/build-$v.log"; exit 1; }
    timing "build-$v" $(( $(date +%s) - s ))
done
out() { echo "$WORK/out/$1"; }

echo "== 1. first boot of $V1"
cp --sparse=always "$(out $V1)/tsunagi_$V1.raw" "$T/disk.raw"
truncate -s 6G "$T/disk.raw"
cp "$WORK/tools/usr/share/OVMF/OVMF_VARS_4M.fd" "$T/vars.fd"
s=$(date +%s)
boot boot1 900 "" "hostfwd=tcp:127.0.0.1:$PLAIN_FWD-:8080,hostfwd=tcp:127.0.0.1:$LAN_FWD-:8443"
if wait_for "$T/boot1.log" "TSUNAGI-TEST done" 600 $vm; then
    timing first-boot $(( $(date +%s) - s ))
    L=$T/boot1.log
    check "Secure Boot keys enrolled by systemd-boot on first boot" has "$L" "Custom Secure Boot keys successfully enrolled"
    check "Secure Boot is on ($(line "$L" 'TSUNAGI-TEST secure-boot'))" has "$L" "TSUNAGI-TEST secure-boot=enabled"
    check "the edge reports ready ($(line "$L" 'TSUNAGI-TEST edge='))" has "$L" "TSUNAGI-TEST edge=active status=not enrolled: enrolment page"
    check "the root (/etc, /var) is on dm-crypt ($(line "$L" 'TSUNAGI-TEST root='))" has "$L" "TSUNAGI-TEST root=/dev/mapper/root type=crypt"
    check "the root's LUKS key is bound to the TPM2 ($(line "$L" 'TSUNAGI-TEST root-luks'))" has "$L" "tokens=.*tpm2"
    check "/usr is erofs under dm-verity ($(line "$L" 'TSUNAGI-TEST usr='))" has "$L" "TSUNAGI-TEST usr=/dev/mapper/usr fstype=erofs options=ro"
    check "the firewall drops by default both ways ($(line "$L" 'TSUNAGI-TEST firewall'))" has "$L" "TSUNAGI-TEST firewall-input=policy drop firewall-output=policy drop"
    check "the store key is sealed with systemd-creds" has "$L" "TSUNAGI-TEST store-key-credential=sealed"
    check "the boot is good (boot-complete.target reached)" has "$L" "TSUNAGI-TEST boot-complete=active"
    check "the console shows how to enrol" has "$L" "not enrolled yet"
    page=$(curl -s --max-time 20 "http://127.0.0.1:$PLAIN_FWD/" || true)
    check "the LAN shows the enrolment page" grep -q "tsunagi 機器の登録" <<< "$page"
    wrong=$(curl -s --max-time 60 --data-urlencode "token=not-a-token" --data-urlencode "name=10.0.2.15" "http://127.0.0.1:$PLAIN_FWD/enrol" || true)
    check "a wrong token is refused with the hub's reason" grep -q "登録できませんでした" <<< "$wrong"
    s=$(date +%s)
    ok=$(curl -s --max-time 120 --data-urlencode "token=$token" --data-urlencode "name=10.0.2.15" --data-urlencode "appliance=new-box" "http://127.0.0.1:$PLAIN_FWD/enrol" || true)
    check "the token enrols the box" grep -q "登録しました" <<< "$ok"
    if wait_for "$L" "LAN proxy serving" 300 $vm; then
        timing enrol-restore-serve $(( $(date +%s) - s ))
        check "the box restored the facility's copy" has "$L" "restored the facility's copy"
        check "the hub streamed the copy to the new box up to segment $old_head ($(line "$T/hub.log" 'restore started' | cut -c1-200))" \
            grep -q "restore started facility=$FACILITY appliance=new-box to=$old_head" "$T/hub.log"
        code=$(curl -s -o "$T/portal.html" -w '%{http_code}' --max-time 60 --cacert "$T/hub/ca/root.crt" \
            --connect-to "10.0.2.15:8443:127.0.0.1:$LAN_FWD" "https://10.0.2.15:8443/" || true)
        check "the portal is served over the box's LAN certificate (HTTP $code)" test "$code" = 200 -o "$code" = 303 -o "$code" = 302
    else
        fail "the edge did not start serving after enrolment"
    fi
    halt boot1 ok
else
    fail "the first boot did not report (see $T/boot1.log)"
    halt boot1 failed
fi

if want 2; then
echo "== 2. Secure Boot refuses a tampered kernel image"
cp --sparse=always "$T/disk.raw" "$T/tampered.raw"
cp "$T/vars.fd" "$T/vars-tampered.fd"
cp -r "$T/tpm" "$T/tpm-tampered"
"$HERE/in-tree.sh" bash -euo pipefail -c '
    img=/work/test/tampered.raw
    start=$(sfdisk -J "$img" | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)[\"partitiontable\"][\"partitions\"] if p[\"type\"].upper()==\"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\"][0]; print(p[\"start\"]*512)")
    f=$(mdir -i "$img@@$start" -b ::/EFI/Linux | grep "\.efi$" | head -1)
    mcopy -n -i "$img@@$start" "$f" /tmp/uki.efi
    # One byte of the signed image changed, well inside its sections.
    printf "X" | dd of=/tmp/uki.efi bs=1 seek=1048576 conv=notrunc status=none
    mcopy -o -n -i "$img@@$start" /tmp/uki.efi "$f"
    echo "tampered $f"
' > "$T/tamper.out"
VM_TIMEOUT=180 "$HERE/vm.sh" "$T/tampered.raw" "$T/vars-tampered.fd" "$T/tpm-tampered" "$T/tampered.log" > /dev/null 2>&1 &
vm=$!
# The firmware refuses it in seconds; then nothing more can happen, so stop waiting.
wait_for "$T/tampered.log" "Access denied" 170 $vm && sleep 10
kill $vm 2>/dev/null; kill_vms; wait $vm 2>/dev/null || true
check "the tampered kernel image is refused (firmware: $(grep -a -o -E 'Access denied|Security Violation' "$T/tampered.log" | head -1))" \
    grep -a -q -E "Access denied|Security Violation" "$T/tampered.log"
check "nothing of the tampered image ran" test -z "$(grep -a 'TSUNAGI-TEST' "$T/tampered.log")"
rm -f "$T/tampered.raw"
fi

update_disk() { # version, image file
    local v=$1 o; o=$(out "$v")
    rm -rf "$T/upd-$v"; mkdir -p "$T/upd-$v"
    cp "$o/tsunagi_$v.efi" "$o"/tsunagi_$v.usr-*.raw "$T/upd-$v/"
    (cd "$T/upd-$v" && sha256sum * > SHA256SUMS)
    echo "$v" > "$T/upd-$v/version"
    "$HERE/in-tree.sh" mkfs.ext4 -q -L TSUNAGIUPD -d "/work/test/upd-$v" "/work/test/$2" 1G
    rm -rf "$T/upd-$v"
}

if want 3; then
echo "== 3. update $V1 -> $V2"
update_disk $V2 upd2.img
s=$(date +%s)
boot boot2 900 upd2.img
if wait_for "$T/boot2.log" "TSUNAGI-TEST update-running" 800 $vm; then
    timing update $(( $(date +%s) - s ))
    L=$T/boot2.log
    check "sysupdate installed $V2 into the free slot" has "$L" "Successfully installed update '$V2'"
    check "the box rebooted into $V2" has "$L" "TSUNAGI-TEST version=$V2"
    check "$V2 is marked good (no boot counter left: $(line "$L" 'TSUNAGI-TEST entries' | tr -d '\r'))" last_has "$L" 'TSUNAGI-TEST entries' "tsunagi_$V2.efi"
    check "the edge came back enrolled on $V2 ($(line "$L" 'TSUNAGI-TEST edge=' | tr -d '\r' | cut -c1-120))" last_has "$L" 'TSUNAGI-TEST edge=' "serving facility $FACILITY"
    check "the TPM2 still unlocks the root after the update" last_has "$L" 'TSUNAGI-TEST root=' "type=crypt"
    check "the TLS client key is in the TPM ($(line "$L" 'TSUNAGI-TEST tls-key' | tr -d '\r'))" last_has "$L" 'TSUNAGI-TEST tls-key=' "tls-key=tpm"
    wait_for "$L" "TSUNAGI-TEST done" 60 $vm || true
    halt boot2 ok
else
    fail "the update to $V2 did not come up (see $T/boot2.log)"
    halt boot2 failed
fi

rm -f "$T/upd2.img"
fi
if want 4; then
echo "== 4. a broken update to $V3 rolls back to $V2"
update_disk $V3 upd3.img
s=$(date +%s)
boot boot3 1500 upd3.img
if wait_for "$T/boot3.log" "TSUNAGI-TEST update-rolled-back" 1400 $vm; then
    timing rollback $(( $(date +%s) - s ))
    L=$T/boot3.log
    check "sysupdate installed $V3" has "$L" "Successfully installed update '$V3'"
    check "$V3 booted and its boot check failed" has "$L" "boot check: tsunagi-edge did not report ready"
    tries=$(grep -a -c "boot check: tsunagi-edge did not report ready" "$L" || true)
    check "$V3 used up its boot tries ($tries failed boots)" test "$tries" -ge 3
    check "the box is back on $V2 ($(line "$L" 'TSUNAGI-TEST version=' | tr -d '\r'))" last_has "$L" 'TSUNAGI-TEST version=' "$V2"
    check "$V3 is marked bad ($(line "$L" 'update-rolled-back' | tr -d '\r' | cut -c1-200))" last_has "$L" 'update-rolled-back' "tsunagi_$V3+0-"
    halt boot3 ok
else
    fail "no rollback from $V3 (see $T/boot3.log)"
    halt boot3 failed
fi

rm -f "$T/upd3.img"
fi
if want 5; then
echo "== 5. factory reset of the enrolled box"
rm -rf "$T/reset"; mkdir -p "$T/reset"; echo factory-reset > "$T/reset/action"; echo none > "$T/reset/version"
"$HERE/in-tree.sh" mkfs.ext4 -q -L TSUNAGIUPD -d /work/test/reset /work/test/reset.img 64M
s=$(date +%s)
boot boot4 900 reset.img "hostfwd=tcp:127.0.0.1:$PLAIN_FWD-:8080"
if wait_for "$T/boot4.log" "TSUNAGI-TEST factory-reset-done" 700 $vm; then
    timing factory-reset $(( $(date +%s) - s ))
    L=$T/boot4.log
    before=$(grep -a 'TSUNAGI-TEST store-key-credential' "$L" | head -1 | sed 's/.*sha256=//' | tr -d '\r')
    after=$(line "$L" 'TSUNAGI-TEST store-key-credential' | sed 's/.*sha256=//' | tr -d '\r')
    check "the enrolled box asked for a factory reset ($(line "$L" 'factory-reset: requested' | tr -d '\r' | cut -c1-160))" has "$L" "TSUNAGI-TEST factory-reset: requested"
    check "systemd-repart in the initrd erased and re-made the root ($(line "$L" 'Removing partition' | tr -d '\r' | cut -c1-120))" has "$L" "Removing partition [0-9]* for factory reset"
    check "the old root was not open when repart re-made it (no emergency mode)" test -z "$(grep -a -E 'emergency mode|Bad message' "$L")"
    check "after the reset the box is not enrolled and shows its enrolment page ($(line "$L" 'TSUNAGI-TEST edge=' | tr -d '\r' | cut -c1-120))" \
        last_has "$L" 'TSUNAGI-TEST edge=' "not enrolled: enrolment page"
    check "the new root is encrypted and bound to the TPM2 again" last_has "$L" 'TSUNAGI-TEST root-luks' "tokens=.*tpm2"
    check "a new store key was sealed ($before, then $after)" test -n "$after" -a -n "$before" -a "$after" != "$before"
    check "systemd-repart cleared the request" last_has "$L" 'TSUNAGI-TEST efivar-factory-reset' absent
    page=$(curl -s --max-time 20 "http://127.0.0.1:$PLAIN_FWD/" || true)
    check "the LAN shows the enrolment page again" grep -q "tsunagi 機器の登録" <<< "$page"
    halt boot4 ok
    # The next boot is an ordinary one again: nothing more is erased.
    boot boot5 600
    if wait_for "$T/boot5.log" "TSUNAGI-TEST done" 500 $vm; then
        L=$T/boot5.log
        check "the next boot erases nothing" test -z "$(grep -a 'for factory reset' "$L")"
        check "the next boot keeps the new root (store key $(line "$L" 'TSUNAGI-TEST store-key-credential' | sed 's/.*sha256=//' | tr -d '\r'))" \
            last_has "$L" 'TSUNAGI-TEST store-key-credential' "sha256=$after"
        halt boot5 ok
    else
        fail "the boot after the factory reset did not report (see $T/boot5.log)"
        halt boot5 failed
    fi
else
    fail "the factory reset did not come back (see $T/boot4.log)"
    halt boot4 failed
fi
fi

echo
cat "$T/timings"
if [ $fails -gt 0 ]; then echo "image-test: $fails check(s) failed; logs in $T"; exit 1; fi
echo "image-test: all checks passed; logs in $T"
[ $all_stages = yes ] || { echo "image-test: stages $STAGES only; BENCHMARKS.md left as it is"; exit 0; }

# The timings into BENCHMARKS.md (its last section; `just bench` keeps it).
t() { awk -v k="$1" '$1 == k {print $2}' "$T/timings"; }
builds=$(for v in $V1 $V2 $V3; do t build-$v; done | sort -n)
median=$(echo "$builds" | sed -n 2p)
o=$(out $V1)
mb() { echo $(( $1 / 1048576 )); }
raw_alloc=$(( $(stat -c %b "$o/tsunagi_$V1.raw") * 512 ))
usr_size=$(stat -c %s "$o"/tsunagi_$V1.usr-x86-64.*.raw)
section=$(cat <<MD
## Appliance image (issue 7)

Written by \`just image-test\` (\`image/tools/image-test.sh\`) on $(date -u +%Y-%m-%d), $(nproc) cores of $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1). The guest runs under qemu **TCG** (software emulation: this machine's KVM cannot run a stock kernel), q35 with OVMF (Secure Boot) and swtpm, 2 vCPUs, 2 GiB; so boots here are several times slower than on a real box. One run of each step.

| step | seconds | what it covers |
|---|---:|---|
| image build (median of 3: $(echo $builds | tr ' ' '/') s) | $median | mkosi in the trixie tools tree: packages from the cache, initrd, signed UKI, erofs \`/usr\`, verity hash and signature, disk and split partitions |
| first boot | $(t first-boot) | power on → Secure Boot keys enrolled by systemd-boot and reset → UKI → verity \`/usr\` → systemd-repart grows slot A, adds slot B and the LUKS2 root sealed to the TPM2 → store key sealed → firewall → edge ready with its enrolment page |
| enrolment to serving | $(t enrol-restore-serve) | token posted on the LAN page → key made in the TPM, CSR signed there → certificate → the facility's copy restored from the hub → the LAN proxy serving |
| update | $(t update) | power on with the update disk → systemd-sysupdate writes slot B and the new UKI → reboot → the new version boots, reaches boot-complete and is blessed |
| rollback | $(t rollback) | power on with a broken update → installed → three failed boots (each rebooted by the boot check) → systemd-boot falls back → the old version reports |
| factory reset | $(t factory-reset) | power on with the reset request → the enrolled box sets the FactoryReset EFI variable and reboots → systemd-repart in the initrd deletes and re-creates the encrypted root before it is unlocked, and clears the request → new store key → enrolment page |

Sizes: disk image $(mb $raw_alloc) MiB allocated ($(mb $(stat -c %s "$o/tsunagi_$V1.raw")) MiB apparent), \`/usr\` (erofs) $(mb $usr_size) MiB, UKI $(mb $(stat -c %s "$o/tsunagi_$V1.efi")) MiB. Logs of the run: \`$T\`.
MD
)
bm=$SRC/BENCHMARKS.md
if [ -f "$bm" ] && grep -q '^## Appliance image (issue 7)' "$bm"; then
    sed -i '/^## Appliance image (issue 7)/,$d' "$bm"
fi
{ [ -s "$bm" ] && printf '\n'; echo "$section"; } >> "$bm"
echo "image-test: timings written to $bm"
