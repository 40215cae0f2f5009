#!/usr/bin/env bash
# A two-host network lab on one machine: network namespaces joined by a
# virtual Ethernet cable, and a lossy "router" made of an nftables rule that
# drops a random share of packets. Shows what the UDP and TCP chapters say
# about loss: UDP hands it to the application (our client's retries), TCP
# hides it behind retransmissions (and you pay in latency). Then the same
# with `impair` (user space, seeded) instead of the firewall rule.
#
#   scripts/netns-lab.sh                 # 20% loss, no sudo where the kernel allows it
#   LOSS=40 scripts/netns-lab.sh
#
# No root needed where the kernel lets ordinary users create user and
# network namespaces: the script re-runs itself under `unshare -rnm` (a new
# user namespace in which we are "root", a new network namespace with only
# `lo`, a new mount namespace for /run/netns), so everything it creates
# lives and dies inside that namespace and nothing touches the host's
# network. Where the kernel forbids it (kernel.unprivileged_userns_clone=0,
# user.max_user_namespaces=0, or an AppArmor policy such as Ubuntu 24.04's
# kernel.apparmor_restrict_unprivileged_userns=1), it says so and falls back
# to sudo.
#
# Needs iproute2 (`ip`) and nftables (`nft`); nftables is installed with
# apt-get if missing. This kernel has no `netem` qdisc, hence the firewall
# rule. Addresses are 192.0.2.1 and 192.0.2.2 (TEST-NET-1, RFC 5737, reserved
# for documentation): they exist only inside the namespaces this script
# creates, and are deleted on exit. Every client is bounded by counts and
# timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
LOSS=${LOSS:-20}
SRV=nplab-server CLI=nplab-client

# ---- outside: tools, build, then into a namespace -------------------------
if [ -z "${NPLAB_INSIDE:-}" ]; then
    command -v ip >/dev/null || { echo "needs ip (apt-get install iproute2)"; exit 2; }
    if ! command -v nft >/dev/null; then
        echo "== nft (nftables) is missing: installing it with apt-get"
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y -q nftables >/dev/null || { apt-get update -q && apt-get install -y -q nftables >/dev/null; }
        elif command -v sudo >/dev/null; then
            sudo apt-get install -y -q nftables >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q nftables >/dev/null; }
        else
            echo "cannot install nftables: not root and no sudo (apt-get install nftables as root)"; exit 2
        fi
    fi
    cargo build -p udp-echo -p tcp-echo -p impair
    export NPLAB_INSIDE=1
    # Can an ordinary user make the namespaces? Try the cheapest one first.
    if unshare -rnm true 2>/dev/null; then
        echo "== running in a new user + network + mount namespace (unshare -rnm): no sudo needed"
        exec unshare -rnm "$0" "$@"
    fi
    why="this kernel does not let unprivileged users create user namespaces"
    [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo 1)" = 0 ] && why="kernel.unprivileged_userns_clone = 0"
    [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" = 0 ] && why="user.max_user_namespaces = 0"
    [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null || echo 0)" = 1 ] && why="AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)"
    if [ "$(id -u)" = 0 ]; then
        echo "== unshare -rnm failed ($why); already root, so using the host's namespaces directly"
        export NPLAB_INSIDE=root
    else
        echo "== unshare -rnm failed: $why."
        echo "   Falling back to sudo (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)."
        exec sudo --preserve-env=LOSS,NPLAB_INSIDE "$0" "$@"
    fi
fi

# ---- inside: as (namespace) root ------------------------------------------
if [ "${NPLAB_INSIDE}" = 1 ]; then
    # Our own /run, seen only in this mount namespace: `ip netns add`
    # bind-mounts each namespace under /run/netns, which the host's /run
    # (owned by the real root) would not let us create.
    mount -t tmpfs nplab /run
fi
T=$PWD/target/debug

cleanup() {
    for ns in $SRV $CLI; do
        ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
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
tmp=$(mktemp)
seq 1 50 | sed 's/^/message /' | ip netns exec $CLI timeout 120 "$T/tcp-echo" client \
    --addr 192.0.2.1:7001 --timeout 30s > "$tmp" 2>&1 || true
echo "   50 messages sent; echo round-trip times, slowest five (ms):"
grep -oE '\(([0-9.]+) ms\)' "$tmp" | tr -d '(ms)' | sort -n | tail -5 | sed 's/^/     /'
echo "   fastest: $(grep -oE '\(([0-9.]+) ms\)' "$tmp" | tr -d '(ms) ' | sort -n | head -1) ms;" \
     "$(grep -c '^< ' "$tmp") of 50 echoes received"
rm -f "$tmp"
echo
echo "== packets the router dropped:"
ip netns exec $SRV nft list chain inet lab in | grep counter | sed 's/^\s*/   /'

echo
echo "== the same loss in user space: impair in the client's host drops $LOSS% of requests, the firewall rule removed"
ip netns exec $SRV nft flush chain inet lab in
# --allow-non-loopback: the upstream is 192.0.2.1, an address that exists
# only inside these namespaces.
ip netns exec $CLI "$T/impair" udp --listen 127.0.0.1:7102 --upstream 192.0.2.1:7002 \
    --loss "$LOSS%" --direction up --seed 7 --report 0 --allow-non-loopback >/dev/null 2>"${TMPDIR:-/tmp}/nplab-impair.$$" &
IMPAIR=$!
ip netns exec $CLI timeout 10 sh -c 'until "$0" client --addr 127.0.0.1:7102 --timeout 200ms --retries 20 ping >/dev/null 2>&1; do :; done' "$T/udp-echo"
ip netns exec $CLI timeout 120 "$T/udp-echo" client --addr 127.0.0.1:7102 --count 200 \
    --timeout 200ms --retries 0 2>&1 | tail -4 | sed 's/^/   /' || true
kill -INT $IMPAIR 2>/dev/null || true
wait $IMPAIR 2>/dev/null || true
echo "   impair's summary (the same --seed loses the same datagrams every run):"
grep -o 'impair udp stopped: .*' "${TMPDIR:-/tmp}/nplab-impair.$$" | sed 's/; /;\n     /g; s/^/     /' || true
rm -f "${TMPDIR:-/tmp}/nplab-impair.$$"
