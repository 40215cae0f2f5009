#!/usr/bin/env bash
# Where a 64-byte echo's server CPU goes, per design: `perf record` of each
# server, pinned to CPU 0, while loadgen (pinned to CPU 1) runs 100
# connections of raw 64-byte ping-pong; the samples are then sorted into
# a few buckets by symbol name. Shares, not times: a share does not depend
# on how busy the machine is the way CPU time per echo does.
#
#   cargo build --release -p async-server -p loadgen
#   scripts/where_time_goes.sh                # every design, 4 s of samples each
#   SERVERS="reference uring" scripts/where_time_goes.sh
#
# Buckets (first match wins, by symbol name):
#   io_uring      the kernel's io_uring code (io_*, __io_*)
#   syscall       entering and leaving the kernel, fd lookup, the VFS and
#                 socket-file layers a read()/write() crosses
#   epoll         ep_* (the kernel's epoll)
#   scheduler     context switches, wake-ups
#   clock         clock_gettime, the TSC
#   user          everything in the server's own binary and libc
#   TCP and rest  everything else: TCP/IP, the loopback device, skb memory
#
# Needs perf (apt-get install linux-perf) and root or
# kernel.perf_event_paranoid <= 1. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
SECS=${SECS:-4}
OUT=${OUT:-target/where}
SERVERS=${SERVERS:-reference event-loop event-loop-2-reuseport uring tokio-1t tokio}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
common=(--addr 127.0.0.1:0 --framing raw --max-conns 1024 --idle-timeout 60s --max-frame 1MiB)

for name in $SERVERS; do
    case $name in
    reference) cmd=("$BIN/epoll-ref" --addr 127.0.0.1:0) ;;
    event-loop) cmd=("$BIN/async-server" server --model event-loop "${common[@]}") ;;
    event-loop-2-*) cmd=("$BIN/async-server" server --model event-loop --loops 2 --balance "${name#event-loop-2-}" "${common[@]}") ;;
    uring) cmd=("$BIN/async-server" server --model uring "${common[@]}") ;;
    tokio-1t) cmd=("$BIN/async-server" server --model tokio --threads 1 --offload none "${common[@]}") ;;
    tokio) cmd=("$BIN/async-server" server --model tokio --threads "$(nproc)" --offload none "${common[@]}") ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
    esac
    taskset -c 0 "${cmd[@]}" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    pid=$!
    addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^listening on //p' "$OUT/$name.out" 2>/dev/null | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "$name did not start" >&2; kill "$pid" 2>/dev/null; continue; }
    timeout 60 taskset -c 1 "$BIN/loadgen" run --addr "$addr" --framing raw --conns 100 --size 64 \
        --duration $((SECS + 3))s --warmup 1s >"$OUT/$name.run" 2>&1 &
    load=$!
    sleep 1.5 # past the connects and the warm-up's first second: steady state
    perf record -q -F 4999 -p "$pid" -o "$OUT/$name.perf" -- sleep "$SECS" >/dev/null 2>&1 || true
    wait "$load" || true
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    perf report -i "$OUT/$name.perf" --no-children --sort sym --stdio 2>/dev/null \
        | grep -v '^#' | grep '%' >"$OUT/$name.syms" || true
done

python3 - "$OUT" $SERVERS <<'EOF'
import re, sys
out, names = sys.argv[1], sys.argv[2:]
buckets = [
    ("io_uring", r"^(io_|__io_)"),
    ("syscall", r"(do_syscall|entry_SYSCALL|syscall_exit|syscall_return|__x64_sys|__do_sys|ksys_|fdget|fget|fput|__fget|vfs_|rw_verify|security_file|fsnotify|sock_read_iter|sock_write_iter|__sys_recvfrom|__sys_sendto|sock_recvmsg$|sock_sendmsg$|__libc_recv|__libc_send|__send|__GI___libc_write|^read$|^write$|__GI___pthread)"),
    ("epoll", r"(^ep_|epoll|__ep_)"),
    ("scheduler", r"(schedule|finish_task_switch|switch_|__switch|pick_next|dequeue_|enqueue_|update_curr|psi_|try_to_wake|ttwu|select_task|futex|set_next_entity|put_prev)"),
    ("clock", r"(clock_gettime|read_tsc|ktime_get)"),
]
print("| server | TCP and rest | syscall | epoll | io_uring | scheduler | clock | user |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in names:
    try:
        lines = open(f"{out}/{name}.syms").read().splitlines()
    except OSError:
        print(f"| {name} | no profile | | | | | | |")
        continue
    share = {b: 0.0 for b, _ in buckets}
    share["user"] = share["rest"] = 0.0
    for line in lines:
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$", line)
        if not m:
            continue
        pct, where, sym = float(m.group(1)), m.group(2), m.group(3)
        for b, rx in buckets:
            # In user space only the clock (vDSO) and libc's syscall
            # wrappers have a bucket: `epoll_ref::main` is not the kernel's epoll.
            if where == "." and b not in ("clock", "syscall"):
                continue
            if re.search(rx, sym):
                share[b] += pct
                break
        else:
            share["user" if where == "." else "rest"] += pct
    f = lambda b: f"{share[b]:.1f} %"
    print(f"| {name} | {f('rest')} | {f('syscall')} | {f('epoll')} | {f('io_uring')} | {f('scheduler')} | {f('clock')} | {f('user')} |")
print(f"\n(profiles: {out}/NAME.perf; perf report -i {out}/NAME.perf --no-children)")
EOF
