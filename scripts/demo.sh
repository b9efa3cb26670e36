#!/usr/bin/env bash
# The main job on its embedded defaults: a hub and an edge appliance on loopback. The hub gets a
# CA and a key; the appliance enrols with a one-time token, mirrors a synthetic clinic's SS-MIX2
# export into its encrypted store and syncs it to the hub's failover copy over mutual TLS; the
# hub indexes the clinic's patients for the portal. The appliance's LAN proxy serves the portal to
# the clinic's browsers (here: this machine's), and the demo prints its address and logins. Then
# both keep running until Ctrl-C (TSUNAGI_DEMO_EXIT=1 stops after the checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug
work=$PWD/${TSUNAGI_DEMO_DIR:-demo}
listen=${TSUNAGI_DEMO_LISTEN:-127.0.0.1:8443}
operators=${TSUNAGI_DEMO_OPERATOR_LISTEN:-127.0.0.1:8444}
# The clinic's LAN is 127.0.0.2 on this one machine: the hub has localhost and 127.0.0.1, and no
# LAN certificate may carry the hub's or the broker's names.
proxy=${TSUNAGI_DEMO_PROXY:-127.0.0.2:8445}
plain=${TSUNAGI_DEMO_PLAIN:-127.0.0.2:8480}
mqtt=${TSUNAGI_DEMO_MQTT:-127.0.0.1:8883}
metrics=${TSUNAGI_DEMO_METRICS:-127.0.0.1:9464}
facility=3712345678
mkdir -p "$work"
export TSUNAGI_HUB_DATA="$work/hub"

if [ ! -d "$work/clinic/standard" ]; then
  "$bin/ssmix2-gen" --out "$work/clinic" --preset clinic-year --malformed 3
fi

echo "== hub: the network's CA, the hub's key, and the server on https://$listen"
[ -f "$work/hub/hub.key" ] || "$bin/tsunagi-hub" keygen
[ -f "$work/hub/ca/root.crt" ] || "$bin/tsunagi-hub" ca init --network "tsunagi demo"
fingerprint=$("$bin/tsunagi-hub" ca fingerprint)

echo "== broker: Mosquitto for the fleet's telemetry on $mqtt (client certificates from the CA, per-facility ACL)"
"$bin/tsunagi-hub" broker setup --listen "$mqtt" >/dev/null
mosquitto -c "$work/hub/broker/mosquitto.conf" 2> "$work/mosquitto.log" &
broker_pid=$!
hub_pid=
edge_pid=
trap 'kill $hub_pid $edge_pid $broker_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/${mqtt%:*}/${mqtt##*:}) 2>/dev/null && break; sleep 0.1; done
"$bin/tsunagi-hub" serve --listen "$listen" --operator-listen "$operators" --metrics-listen "$metrics" \
  --broker "mqtts://$mqtt" > "$work/hub.out" 2> "$work/hub.log" &
hub_pid=$!
for _ in $(seq 50); do grep -q listening "$work/hub.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/hub.out" || { cat "$work/hub.log"; exit 1; }
url="https://$listen"

cat > "$work/edge.toml" <<TOML
state_dir = "$work/edge"
key_file = "$work/edge/store.key"
[ingest]
roots = ["$work/clinic/standard", "$work/clinic/extended"]
[hub]
url = "$url"
[proxy]
listen = "$proxy"
plain_listen = "$plain"
names = ["${proxy%:*}"]
[telemetry]
broker = "mqtts://$mqtt"
TOML
mkdir -p "$work/edge"
[ -f "$work/edge/store.key" ] || "$bin/tsunagi-edge" keygen --out "$work/edge/store.key"

if [ ! -f "$work/edge/identity/identity.pem" ]; then
  echo
  echo "== enrolment: the network office makes a one-time token; the appliance enrols with it"
  token=$("$bin/tsunagi-hub" token create --facility $facility --name "さぬきデモ診療所" | awk '/^token:/{print $2}')
  "$bin/tsunagi-edge" enroll --config "$work/edge.toml" --hub "$url" --token "$token" \
    --ca-fingerprint "$fingerprint" --appliance demo-box
fi

echo
echo "== run: the appliance ingests the clinic (40,000 files) and syncs it to the hub"
fresh=0; [ -d "$work/edge/store" ] || fresh=1
"$bin/tsunagi-edge" run --config "$work/edge.toml" > "$work/edge.out" 2> "$work/edge.log" &
edge_pid=$!
for _ in $(seq 600); do
  st=$("$bin/tsunagi-edge" status --config "$work/edge.toml" --json 2>/dev/null || true)
  # The first full scan has printed its summary (a rerun on an unchanged tree prints none), and
  # the hub holds every segment.
  if { [ $fresh = 0 ] || grep -q '^seen' "$work/edge.out"; } && [ -n "$st" ] &&
     python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["outbox"]["seq"]>0 and s["hub"]["backlog"]==0 else 1)' <<<"$st"; then
    break
  fi
  sleep 1
done
"$bin/tsunagi-edge" status --config "$work/edge.toml" | sed -e '/files stored with warnings/,$d'
for _ in $(seq 100); do grep -q '^proxy on' "$work/edge.out" && break; sleep 0.2; done
grep -q '^proxy on' "$work/edge.out" || { echo "the appliance's LAN proxy did not start:" >&2; tail -5 "$work/edge.log" >&2; exit 1; }

echo
echo "== the hub's failover copy: hash chain, integrity and encryption checked"
"$bin/tsunagi-hub" copy verify --facility $facility

echo
echo "== export-ssmix2: the tree back out of the store, compared byte for byte with the original"
rm -rf "$work/export"
"$bin/tsunagi-edge" export-ssmix2 --config "$work/edge.toml" --to "$work/export/standard" --extended-to "$work/export/extended"
# The malformed files the generator planted are in quarantine, not in the store: leave them out.
if diff -r -q -x '900' "$work/clinic" "$work/export" >/dev/null; then
  echo "identical: every stored file came back byte for byte"
else
  echo "DIFFERENT: the export does not match the source tree" >&2
  exit 1
fi

echo
echo "== portal accounts: a doctor of the demo clinic and the network office (first passwords below)"
account() { # login role facility
  local out
  out=$("$bin/tsunagi-hub" user add --login "$1" --name "$1 (demo)" --role "$2" --facility "$3" 2>/dev/null) ||
    out=$("$bin/tsunagi-hub" user reset --login "$1")
  awk -F'temporary password: ' '/temporary password/{print $2}' <<<"$out"
}
doctor_pw=$(account dr-demo doctor $facility)
office_pw=$(account office-demo office "")
ops_pw=$(account ops-demo operator "")

echo
echo "portal:     https://$proxy/login   (through the clinic's appliance, as its terminals use it)"
echo "  login:    dr-demo / $doctor_pw   (a doctor of the demo clinic; change the password at first login)"
echo "  first:    http://$plain/   explains how to trust the network's root once (the browser will not know it)"
echo "office:     https://$operators/login   (the operators' listener)"
echo "  login:    office-demo / $office_pw   (the network office: linking, consent, all accounts)"
echo "fleet:      https://$operators/fleet   (ops-demo / $ops_pw: every appliance live, its checks, commands)"
echo "metrics:    http://$metrics/metrics   (Prometheus)"
echo "checks:     $bin/tsunagi-edge check --config $work/edge.toml   (the appliance's posture, here on a dev machine)"
echo "hub:        $url   (appliances only: mutual TLS)"
echo "appliance:  facility $facility, demo-box; state in $work/edge, config $work/edge.toml"
echo "status:     $bin/tsunagi-edge status --config $work/edge.toml"
echo "copies:     TSUNAGI_HUB_DATA=$work/hub $bin/tsunagi-hub copy list"
if [ "${TSUNAGI_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "both keep running; press Ctrl-C to stop them"
wait $hub_pid
