#!/usr/bin/env bash
# A classroom tour: start every chapter's server on a free port and talk to
# it with clients nobody here wrote (nc, socat, openssl s_client, Python),
# then stop it with SIGTERM and show its one-line summary.
#
#   scripts/demo.sh            # all chapters
#   scripts/demo.sh tcp udp    # some: tcp udp threads pool tokio loop tls python
#
# Needs: nc (OpenBSD netcat), socat, openssl, python3 (`scripts/test.sh` installs
# them). Loopback only; every client has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
T=target/debug
LOGS=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$LOGS"' EXIT

# start NAME CMD...: run a server on 127.0.0.1:0, read its `listening on`
# line, export PORT and SPID.
start() {
    local name=$1; shift
    coproc SRV { exec "$@" --addr 127.0.0.1:0 2>"$LOGS/$name.log"; }
    local line
    if ! read -r -t 20 line <&"${SRV[0]}"; then
        echo "$name did not start; its log:"; cat "$LOGS/$name.log"; exit 1
    fi
    PORT=${line##*:}
    SPID=$SRV_PID
    echo "== $name: $line"
}

stop() {
    local name=$1
    kill -TERM "$SPID"
    wait "$SPID" || true
    echo "   server's summary: $(grep -E 'stopped|summary|served|shutting down:' "$LOGS/$name.log" | tail -1 | sed 's/^\[[^]]*\] //')"
    echo
}

say() { echo "   \$ $*"; }

demo_tcp() {
    start tcp-echo $T/tcp-echo server
    say "printf 'hello\nworld\n' | nc -N 127.0.0.1 $PORT"
    printf 'hello\nworld\n' | nc -N -w 5 127.0.0.1 "$PORT" | sed 's/^/   /'
    stop tcp-echo
}

demo_udp() {
    start udp-echo $T/udp-echo server
    say "echo 'one datagram' | nc -u -w 1 127.0.0.1 $PORT"
    echo 'one datagram' | nc -u -w 1 127.0.0.1 "$PORT" | sed 's/^/   /'
    stop udp-echo
}

demo_threads() {
    local model=$1
    start "threaded-$model" $T/threaded-server server --model "$model"
    say "three socat clients at once"
    for i in 1 2 3; do
        (echo "client $i" | socat -t 5 - "TCP:127.0.0.1:$PORT" | sed 's/^/   /') &
    done
    wait $(jobs -p | grep -v "^$SPID$") 2>/dev/null || true
    stop "threaded-$model"
}

demo_async() {
    local model=$1
    start "async-$model" $T/async-server server --model "$model" --framing length
    say "python3: a length-prefixed frame (--framing length)"
    python3 - "$PORT" <<'PY' | sed 's/^/   /'
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
msg = b"hello from python"
s.sendall(struct.pack(">I", len(msg)) + msg)
data = b""
while len(data) < 4 + len(msg):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data)
PY
    stop "async-$model"
}

demo_tls() {
    local ca="$LOGS/ca.pem"
    start tls-echo $T/tls-echo server --ca-out "$ca"
    say "echo 'secret' | openssl s_client -quiet -tls1_3 -CAfile ca.pem -connect 127.0.0.1:$PORT"
    # s_client closes (close_notify) when its stdin ends; give the echo a
    # moment to come back first.
    (echo 'secret'; sleep 1) | timeout 10 openssl s_client -quiet -no_ign_eof -tls1_3 -CAfile "$ca" \
        -verify_return_error -servername localhost -connect "127.0.0.1:$PORT" 2>/dev/null | sed 's/^/   /'
    stop tls-echo
}

demo_python() {
    start python-asyncio python3 scripts/asyncio_echo.py
    say "printf 'the course closing example\n' | nc -N 127.0.0.1 $PORT"
    printf 'the course closing example\n' | nc -N -w 5 127.0.0.1 "$PORT" | sed 's/^/   /'
    kill -TERM "$SPID"; wait "$SPID" || true; echo
}

chapters=("$@")
[ ${#chapters[@]} -eq 0 ] && chapters=(tcp udp threads pool tokio loop tls python)
for c in "${chapters[@]}"; do
    case $c in
        tcp) demo_tcp ;;
        udp) demo_udp ;;
        threads) demo_threads per-client ;;
        pool) demo_threads pool ;;
        tokio) demo_async tokio ;;
        loop) demo_async event-loop ;;
        tls) demo_tls ;;
        python) demo_python ;;
        *) echo "unknown chapter $c (tcp udp threads pool tokio loop tls python)"; exit 2 ;;
    esac
done
