#!/bin/sh
# Fills the firewall's address sets (firewall.nft) in one atomic nft transaction:
#   lan4/lan6          the subnets of this box's own global addresses (the clinic LAN)
#   resolvers4/6       the DNS servers systemd-resolved uses (from DHCP)
#   hub4/hub6          address . port of the hub and the broker, names resolved now
#
#   netsets.sh [--resolv-conf FILE] HOST:PORT...
# Prints the transaction it applied. A name that does not resolve keeps its old addresses out
# (the sets are replaced whole), and the script exits 1 so the failure shows in the journal.
set -u
RESOLV=/run/systemd/resolve/resolv.conf
if [ "${1:-}" = --resolv-conf ]; then RESOLV=$2; shift 2; fi
rc=0
join() { tr '\n' ',' | sed 's/,$//'; }
# `ip` prints addresses with their prefix; nft masks them into networks itself.
lan4=$(ip -o -4 addr show scope global | mawk '{print $4}' | join)
lan6=$(ip -o -6 addr show scope global | mawk '{print $4}' | join)
res4=$(mawk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' "$RESOLV" 2>/dev/null | sort -u | join)
res6=$(mawk '$1 == "nameserver" && $2 ~ /:/ {print $2}' "$RESOLV" 2>/dev/null | sed 's/%.*//' | sort -u | join)
hub4= hub6=
for hp in "$@"; do
    host=${hp%:*} port=${hp##*:}
    host=$(echo "$host" | tr -d '[]')
    case "$port" in ''|*[!0-9]*) echo "netsets: $hp has no port" >&2; rc=1; continue;; esac
    addrs=$(getent ahosts "$host" | mawk '{print $1}' | sort -u)
    [ -n "$addrs" ] || { echo "netsets: $host does not resolve; it stays unreachable until it does" >&2; rc=1; continue; }
    for a in $addrs; do
        case "$a" in
            *:*) hub6="${hub6:+$hub6,}$a . $port";;
            *) hub4="${hub4:+$hub4,}$a . $port";;
        esac
    done
done
tx=$(
    for s in lan4 lan6 resolvers4 resolvers6 hub4 hub6; do echo "flush set inet tsunagi $s"; done
    [ -n "$lan4" ] && echo "add element inet tsunagi lan4 { $lan4 }"
    [ -n "$lan6" ] && echo "add element inet tsunagi lan6 { $lan6 }"
    [ -n "$res4" ] && echo "add element inet tsunagi resolvers4 { $res4 }"
    [ -n "$res6" ] && echo "add element inet tsunagi resolvers6 { $res6 }"
    [ -n "$hub4" ] && echo "add element inet tsunagi hub4 { $hub4 }"
    [ -n "$hub6" ] && echo "add element inet tsunagi hub6 { $hub6 }"
)
echo "$tx" | nft -f - || { echo "netsets: nft refused the set update:" >&2; echo "$tx" >&2; exit 2; }
echo "$tx"
exit $rc
