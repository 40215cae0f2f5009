#!/usr/bin/env bash
# Build every server and the load generator in release mode, then run the
# side-by-side comparison. Results: results/compare.md, compare.json, *.svg.
#
#   scripts/compare.sh              # the full matrix (< 15 minutes on 2 cores)
#   scripts/compare.sh --quick      # the class demo (< 1 minute)
#   scripts/compare.sh --quick --pin --servers async-tokio,python-asyncio
#
# Any extra argument goes to `loadgen compare` (see `loadgen compare --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
exec target/release/loadgen compare "$@"
