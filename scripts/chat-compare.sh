#!/usr/bin/env bash
# The chat room's comparison: each design (threads, tokio, event-loop) at
# several room sizes, with and without one member that never reads, under
# the same load from `loadgen chat`; one table on stdout (and a copy in
# target/chat-compare/table.txt).
#
#   scripts/chat-compare.sh                          # 10, 100, 1000 members; 10 lines/s each; 5 s per cell
#   MEMBERS="10 100" RATE=5 DURATION=2s scripts/chat-compare.sh   # a quick one
#   MODELS=tokio STALLED="0 1 10" scripts/chat-compare.sh
#   PIN=1 scripts/chat-compare.sh   # server on CPU 0, load on CPU 1 (as compare --pin)
#
# Each cell starts a fresh server (release build, 127.0.0.1, an ephemeral
# port, --max-pending 64KiB --slow skip so a stalled member is bounded),
# runs the load, reads the server's CPU time and RSS from /proc, and stops
# it. Columns: fan-out latency from send to each receipt (p50, p99, p99.9,
# max), deliveries per second, server CPU µs per delivered message, RSS.
# A good room shows the same p99 with a stalled member as without.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"threads tokio event-loop"}
MEMBERS=${MEMBERS:-"10 100 1000"}
STALLED=${STALLED:-"0 1"}
RATE=${RATE:-10}
DURATION=${DURATION:-5s}
# PIN=1: the server on CPU 0 and the load generator on CPU 1, so on a
# 2-core machine they do not take turns on one core (taskset, util-linux).
server_cpu=() load_cpu=()
if [ "${PIN:-0}" = 1 ]; then
  server_cpu=(taskset -c 0) load_cpu=(taskset -c 1)
fi
out=target/chat-compare
mkdir -p "$out"
cargo build --release -p chat -p loadgen
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

table="$out/table.txt"
: >"$table"
header_done=
for model in $MODELS; do
  for members in $MEMBERS; do
    for stalled in $STALLED; do
      log="$out/server-$model-$members-$stalled.log"
      "${server_cpu[@]}" target/release/chat server --model "$model" --addr 127.0.0.1:0 \
        --max-conns 20000 --max-pending 64KiB --slow skip --stall-timeout 60s \
        >"$out/announce" 2>"$log" &
      pid=$!
      addr=
      for _ in $(seq 100); do
        addr=$(sed -n 's/^listening on //p' "$out/announce")
        [ -n "$addr" ] && break
        sleep 0.1
      done
      if [ -z "$addr" ]; then
        echo "chat --model $model did not start; see $log" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
      fi
      result=$("${load_cpu[@]}" target/release/loadgen chat --addr "$addr" --members "$members" \
        --stalled "$stalled" --rate "$RATE" --duration "$DURATION" --server-pid "$pid")
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      if [ -z "$header_done" ]; then
        printf '%-11s %s\n' model "$(echo "$result" | head -1)" | tee -a "$table"
        header_done=1
      fi
      printf '%-11s %s\n' "$model" "$(echo "$result" | tail -1)" | tee -a "$table"
    done
  done
done
