#!/usr/bin/env bash
# The chat room's comparison, kept for its environment-variable form: a
# thin wrapper over `loadgen compare --chat` (which see: rows are the
# designs threads, tokio and event-loop; cells are members x stalled
# members; a fresh server per run; the table in target/compare/chat/).
#
#   scripts/chat-compare.sh                              # 10, 100, 1000 members; 0 and 1 stalled; 5 s per cell
#   MEMBERS="10 100" DURATION=1s scripts/chat-compare.sh # a quick one
#   MODELS=tokio STALLED="0 1 10" RATE=0.5 scripts/chat-compare.sh
#   PIN=1 ROUNDS=5 scripts/chat-compare.sh               # server on CPU 0, load on CPU 1; 5 rounds
#
# RATE fixes every member's lines per second; without it each room size
# gets 50,000 / (M·(M-1)), about 50,000 deliveries a second in every cell.
# Any further arguments go to `loadgen compare --chat` as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(compare --chat)
comma() { echo "$1" | tr -s ' ' ',' | sed 's/^,//; s/,$//'; }
[ -n "${MODELS:-}" ] && args+=(--servers "$(comma "$MODELS")")
[ -n "${MEMBERS:-}" ] && args+=(--members "$(comma "$MEMBERS")")
[ -n "${STALLED:-}" ] && args+=(--stalled "$(comma "$STALLED")")
[ -n "${RATE:-}" ] && args+=(--chat-rate "$RATE")
[ -n "${DURATION:-}" ] && args+=(--duration "$DURATION")
[ -n "${ROUNDS:-}" ] && args+=(--rounds "$ROUNDS")
[ "${PIN:-0}" = 1 ] && args+=(--pin)
cargo build --release -p chat -p loadgen
exec target/release/loadgen "${args[@]}" "$@"
