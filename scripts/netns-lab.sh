#!/usr/bin/env bash
# A two-host network lab on one machine: network namespaces joined by a
# virtual Ethernet cable, and a lossy "router" made of an nftables rule that
# drops a random share of packets. Shows what the UDP and TCP chapters say
# about loss: UDP hands it to the application (our client's retries), TCP
# hides it behind retransmissions (and you pay in latency).
#
#   sudo scripts/netns-lab.sh            # 20% loss
#   sudo LOSS=40 scripts/netns-lab.sh
#
# Needs root, iproute2 (`ip`) and nftables (`nft`; apt-get install
# nftables). This kernel has no `netem` qdisc, hence the firewall rule.
# Addresses are 192.0.2.1 and 192.0.2.2 (TEST-NET-1, RFC 5737, reserved for
# documentation): they exist only inside the two namespaces this script
# creates, and both are deleted on exit. Every client is bounded by counts
# and timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
LOSS=${LOSS:-20}
SRV=nplab-server CLI=nplab-client
for tool in ip nft; do
    command -v $tool >/dev/null || { echo "needs $tool (apt-get install iproute2 nftables)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 2; }
cargo build -q -p udp-echo -p tcp-echo
T=$PWD/target/debug

cleanup() {
    ip netns pids $SRV 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del $SRV 2>/dev/null || true
    ip netns del $CLI 2>/dev/null || true
}
trap cleanup EXIT
cleanup

echo "== two hosts: $SRV (192.0.2.1) and $CLI (192.0.2.2), one virtual cable"
ip netns add $SRV
ip netns add $CLI
ip link add veth-srv type veth peer name veth-cli
ip link set veth-srv netns $SRV
ip link set veth-cli netns $CLI
ip -n $SRV addr add 192.0.2.1/24 dev veth-srv
ip -n $CLI addr add 192.0.2.2/24 dev veth-cli
for ns in $SRV $CLI; do ip -n $ns link set lo up; done
ip -n $SRV link set veth-srv up
ip -n $CLI link set veth-cli up

echo "== the lossy router: drop $LOSS% of packets arriving at the server"
ip netns exec $SRV nft add table inet lab
ip netns exec $SRV nft add chain inet lab in '{ type filter hook input priority 0; }'
ip netns exec $SRV nft add rule inet lab in iifname veth-srv numgen random mod 100 '<' "$LOSS" counter drop
ip netns exec $SRV nft list ruleset | sed 's/^/   /'

echo
echo "== UDP: 200 datagrams, each retried up to 3 times (timeout 200ms)"
ip netns exec $SRV "$T/udp-echo" server --addr 192.0.2.1:7002 2>/dev/null >/dev/null &
ip netns exec $CLI timeout 10 sh -c 'until "$0" client --addr 192.0.2.1:7002 --timeout 200ms --retries 20 ping >/dev/null 2>&1; do :; done' "$T/udp-echo"
ip netns exec $CLI timeout 120 "$T/udp-echo" client --addr 192.0.2.1:7002 --count 200 \
    --timeout 200ms --retries 3 2>&1 | tail -8 | sed 's/^/   /' || true

echo
echo "== UDP without retries: the loss is simply the application's problem"
ip netns exec $CLI timeout 120 "$T/udp-echo" client --addr 192.0.2.1:7002 --count 200 \
    --timeout 200ms --retries 0 2>&1 | tail -8 | sed 's/^/   /' || true

echo
echo "== TCP over the same link: every echo arrives (retransmissions), but look at the slow ones"
ip netns exec $SRV "$T/tcp-echo" server --addr 192.0.2.1:7001 2>/dev/null >/dev/null &
ip netns exec $CLI timeout 10 sh -c 'until "$0" client --addr 192.0.2.1:7001 --timeout 5s ready >/dev/null 2>&1; do :; done' "$T/tcp-echo"
seq 1 50 | sed 's/^/message /' | ip netns exec $CLI timeout 120 "$T/tcp-echo" client \
    --addr 192.0.2.1:7001 --timeout 30s > /tmp/nplab-tcp.$$ 2>&1 || true
echo "   50 messages sent; echo round-trip times, slowest five (ms):"
grep -oE '\(([0-9.]+) ms\)' /tmp/nplab-tcp.$$ | tr -d '(ms)' | sort -n | tail -5 | sed 's/^/     /'
echo "   fastest: $(grep -oE '\(([0-9.]+) ms\)' /tmp/nplab-tcp.$$ | tr -d '(ms) ' | sort -n | head -1) ms;" \
     "$(grep -c '^< ' /tmp/nplab-tcp.$$) of 50 echoes received"
rm -f /tmp/nplab-tcp.$$
echo
echo "== packets the router dropped:"
ip netns exec $SRV nft list chain inet lab in | grep counter | sed 's/^\s*/   /'
