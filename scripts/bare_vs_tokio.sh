#!/usr/bin/env bash
# The async chapter's efficiency check: server CPU time per echo of the
# tokio model (one thread) and the mio event loop against a bare 20-line
# tokio echo loop, measured in one run, interleaved, ROUNDS times, with the
# server pinned to CPU 0 and loadgen to CPU 1. Prints one line per run and
# the medians. Loopback only; every run is bounded by --duration.
#
#   scripts/bare_vs_tokio.sh            # 5 rounds of 3 s, 100 connections, 64 B
#   ROUNDS=3 CONNS=1 SIZE=64KiB scripts/bare_vs_tokio.sh   # bulk, one connection
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; CONNS=${CONNS:-100}; SIZE=${SIZE:-64}; DURATION=${DURATION:-3s}
# Not silent: what is built, cargo's own progress, how long it took.
echo "bare_vs_tokio.sh: building async-server and loadgen (cargo build --release, with the examples)" >&2
start=$SECONDS
cargo build --release -p async-server -p loadgen --bins --examples
echo "bare_vs_tokio.sh: built in $((SECONDS - start)) s" >&2
T=target/release
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A results
for round in $(seq "$ROUNDS"); do
  for name in bare tokio1 event-loop; do
    case $name in
      bare) cmd=("$T/examples/bare_tokio_echo" 127.0.0.1:0 1) ;;
      tokio1) cmd=("$T/async-server" server --addr 127.0.0.1:0 --model tokio --threads 1 --framing raw --max-conns 20000) ;;
      event-loop) cmd=("$T/async-server" server --addr 127.0.0.1:0 --model event-loop --framing raw --max-conns 20000) ;;
    esac
    coproc SERVER { exec taskset -c 0 "${cmd[@]}" 2>/dev/null; }
    read -r line <&"${SERVER[0]}"
    addr=${line#listening on }
    pid=$SERVER_PID
    before=$(cpu_ticks "$pid")
    json=$(taskset -c 1 "$T/loadgen" run --addr "$addr" --framing raw --conns "$CONNS" --size "$SIZE" \
           --duration "$DURATION" --warmup 0s --json 2>/dev/null)
    after=$(cpu_ticks "$pid")
    kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    line=$(python3 - "$json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); hz = float(sys.argv[4])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / hz
n = r["verified"]
print(f"{cpu * 1e6 / max(n, 1):.2f} {r['requests_per_sec']:.0f} {r['mb_per_sec']:.1f}")
PY
)
    echo "round $round $name: server µs/echo, echoes/s, MB/s = $line"
    results[$name]+="${line%% *} "
  done
done
for name in bare tokio1 event-loop; do
  echo "median $name: $(echo ${results[$name]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') µs/echo"
done
