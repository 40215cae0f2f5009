#!/usr/bin/env bash
# Build every server and the load generator in release mode, then run the
# side-by-side comparison. Results: compare.md, compare.json and *.svg in
# target/compare/ (untracked); with --publish, the repository's results/.
#
#   scripts/compare.sh              # the full matrix, one pass (~15 minutes on 2 cores; estimate) -> target/compare/
#   scripts/compare.sh --rounds 5   # the same, 5 interleaved rounds (~65 minutes)             -> target/compare/
#   scripts/compare.sh --quick      # the class demo (about a minute)                          -> target/compare/
#   scripts/compare.sh --quick --pin --servers async-tokio,python-asyncio
#   scripts/compare.sh --quick --unix --servers event-loop,async-tokio   # loopback TCP vs a Unix socket
#   scripts/compare.sh --quick --servers event-loop --extra "before=/tmp/old/async-server server --model event-loop"
#   scripts/compare.sh --pin --publish   # refresh results/: the published matrix, 5 rounds
#                                        # (~25-30 minutes on 2 cores; refused with --quick,
#                                        # --servers, --conns, --sizes, --work or --extra)
#
# The published matrix (`--publish`): every row at 1, 100, 1,000 and
# 10,000 connections, 64 B and 16 KiB, work 0 and heavy, 1 s measured
# after 300 ms of warm-up, 5 interleaved rounds (about 190 cells per
# round; 10 connections, in the unpublished full matrix, is left out).
#
# Every run includes the reference row, `epoll-ref` ("practical limit",
# the smallest correct epoll echo), and shows each other row's server CPU
# per request divided by it (`x ref`); with --rounds, the median of the
# per-round ratios with their spread. `select-ref` and `poll-ref` are the
# same echo on select(2) and poll(2). loadgen prints its own estimate of
# the run time once built. The issue-14 targets, measured N times with
# medians and spreads: scripts/measure-targets.sh.
#
# Any extra argument goes to `loadgen compare` (see `loadgen compare --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
*" --publish "*) echo "compare.sh: --publish: 5 interleaved rounds of the published matrix, about 25-30 minutes on 2 cores after the build" >&2 ;;
*" --quick "*) echo "compare.sh: --quick: about a minute after the build" >&2 ;;
esac
# Not silent: what is built, cargo's own progress, how long it took.
echo "compare.sh: building every server and loadgen (cargo build --release --workspace; the first build takes a few minutes)" >&2
start=$SECONDS
cargo build --release --workspace
echo "compare.sh: built in $((SECONDS - start)) s; starting loadgen compare $*" >&2
exec target/release/loadgen compare "$@"
