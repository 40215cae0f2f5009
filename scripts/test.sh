#!/usr/bin/env bash
# The README's test command: every test of the workspace, over real sockets on
# 127.0.0.1, on a fresh machine.
#
#   scripts/test.sh                  set up what is missing, then cargo test --workspace
#   scripts/test.sh --test echo -- netcat    any arguments go on to cargo test
#
# Why a script and not a bare `cargo test --workspace`: the interop tests talk
# to clients nobody here wrote (OpenBSD `nc`, `socat`, `openssl s_client`,
# Python's socket module), and a fresh machine has some of them missing. Such a
# test fails loudly when its peer is missing; it never skips. So this script
# first asks `.ci/needs` which Debian packages are missing and installs those
# (and only those) with apt-get, saying what and why; with everything present
# it touches no network. People who already have the peers can keep running
# `cargo test --workspace` directly. `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t need < <(bash .ci/needs)
if ((${#need[@]})); then
    echo "test.sh: the interop tests need ${need[*]} (real clients nobody here wrote); installing with apt-get"
    if [[ $(id -u) == 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "test.sh: not root and no sudo: install ${need[*]} by hand, then run this again" >&2
        exit 1
    fi
    started=$SECONDS
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
    echo "test.sh: installed ${need[*]} in $((SECONDS - started)) s"
fi

# The tests hold thousands of client sockets at once (the 10,000-connection
# cases); the default soft limit of 1,024 descriptors is too small for them.
# Servers raise their own limit; the test processes inherit this one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# cargo prints what it compiles as it goes, so the first build (several
# minutes on 2 cores) is never silent.
echo "test.sh: cargo test --workspace $*"
exec cargo test --workspace "$@"
