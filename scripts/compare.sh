#!/usr/bin/env bash
# Build every server and the load generator in release mode, then run the
# side-by-side comparison. Results: compare.md, compare.json and *.svg in
# target/compare/ (untracked); with --publish, the repository's results/.
#
#   scripts/compare.sh              # the full matrix (~25 minutes on 2 cores with 13 rows; estimate) -> target/compare/
#   scripts/compare.sh --quick      # the class demo (< 1 minute)               -> target/compare/
#   scripts/compare.sh --quick --pin --servers async-tokio,python-asyncio
#   scripts/compare.sh --quick --unix --servers event-loop,async-tokio   # loopback TCP vs a Unix socket
#   scripts/compare.sh --pin --publish   # refresh results/ (whole matrix only:
#                                        # refused with --quick or --servers)
#
# Every run starts with the reference row, `epoll-ref` ("practical limit",
# the smallest correct epoll echo), and shows each other row's server CPU
# per request divided by it (`x ref`). The issue-14 targets, measured N
# times with medians and spreads: scripts/measure-targets.sh.
#
# Any extra argument goes to `loadgen compare` (see `loadgen compare --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
exec target/release/loadgen compare "$@"
