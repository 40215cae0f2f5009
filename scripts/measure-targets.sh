#!/usr/bin/env bash
# The performance targets of issue 14, measured: run this on a quiet
# machine (nothing else compiling), loopback only, bounded in time
# (about 5 minutes with the defaults on 2 cores).
#
#   scripts/measure-targets.sh          # 3 passes
#   scripts/measure-targets.sh 5        # 5 passes
#
# It prints, and writes to $OUT/targets.txt:
#   1. the pinned 64-byte, 100-connection comparison of every row, RUNS
#      times (each pass a whole `loadgen compare`, so every pass has its
#      own reference): per row the median and spread (min-max) of server
#      CPU per request and of its ratio to the reference (`x ref`), with
#      the issue's target and whether the median meets it;
#   2. RSS per connection at $IDLE idle connections, uring and event loop;
#   3. connections per loop, two loops, both balance modes, $BAL_CONNS
#      connections;
#   4. `strace -c -f` syscalls per echo, uring and the reference (strace is
#      installed with apt-get if missing and we are root; skipped otherwise);
#   5. syscalls, epoll_wait/io_uring_enter and context switches per echo
#      for the event-driven rows, counted by perf stat tracepoints (skipped
#      without perf).
# Targets are reported, never asserted: the exit status is 0 whenever the
# measurements ran.
#
# Knobs (environment): RUNS (or $1) DURATION=2s WARMUP=500ms IDLE=10000
# BAL_CONNS=1000 STRACE_REQS=20000 PERF_REQS=400000 OUT=target/measure PROFILE=release
# (PROFILE=debug: no release build, for trying the script itself out; the
# figures then mean nothing) BUILD=0 (use the binaries already built).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-${RUNS:-3}}
DURATION=${DURATION:-2s}
WARMUP=${WARMUP:-500ms}
IDLE=${IDLE:-10000}
BAL_CONNS=${BAL_CONNS:-1000}
STRACE_REQS=${STRACE_REQS:-20000}
PERF_REQS=${PERF_REQS:-400000}
OUT=${OUT:-target/measure}
PROFILE=${PROFILE:-release}
BUILD=${BUILD:-1}

# Not silent: what is built, cargo's own progress, how long it took.
build() {
    echo "measure-targets.sh: building (cargo build $*)" >&2
    local start=$SECONDS
    cargo build "$@"
    echo "measure-targets.sh: built in $((SECONDS - start)) s" >&2
}
case "$PROFILE" in
release) [ "$BUILD" = 0 ] || build --release --workspace ;;
debug) [ "$BUILD" = 0 ] || build --workspace ;;
*) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
BIN=target/$PROFILE
LOADGEN=$BIN/loadgen
SERVER=$BIN/async-server
REF=$BIN/epoll-ref
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=$OUT/targets.txt
: >"$REPORT"
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }
# Both ends hold $IDLE sockets; the servers and loadgen raise their own
# soft limit to the hard one, this makes sure the hard one is what we have.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Every server started here is ours; stop whichever is left on any exit.
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

# start_server LOGNAME CMD...: start CMD in the background (stdout to
# $OUT/LOGNAME.out, stderr to .err), wait up to 20 s for its
# `listening on ADDR`; sets SERVER_PID and SERVER_ADDR (empty on failure).
start_server() {
    local name=$1
    shift
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_ADDR=
    for _ in $(seq 200); do
        SERVER_ADDR=$(sed -n 's/^listening on //p' "$OUT/$name.out" 2>/dev/null | head -1)
        [ -n "$SERVER_ADDR" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    say "  $name did not start: $(tail -1 "$OUT/$name.err" 2>/dev/null)"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    return 1
}

# stop_server PID: SIGTERM, wait at most 15 s, then SIGKILL.
stop_server() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

say "# Issue 14 targets, measured $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -sr); profile $PROFILE"
say "command: scripts/measure-targets.sh $RUNS (DURATION=$DURATION WARMUP=$WARMUP IDLE=$IDLE BAL_CONNS=$BAL_CONNS STRACE_REQS=$STRACE_REQS)"
say ""

# --- 1. the pinned comparison, RUNS passes -------------------------------
say "## 1. Server CPU per request, 64 B, 100 connections, pinned (server CPU 0, loadgen CPU 1), passes: $RUNS"
for i in $(seq "$RUNS"); do
    echo "pass $i of $RUNS ..." >&2
    rm -rf "${OUT:?}/pass$i"
    timeout 900 "$LOADGEN" compare --pin --conns 100 --sizes 64 --work 0 \
        --duration "$DURATION" --warmup "$WARMUP" --out "$OUT/pass$i" 2> >(grep -E '^\[' >&2) \
        || say "  (pass $i: some cell had errors or a server failed; see $OUT/pass$i/compare.md)"
done
if command -v python3 >/dev/null; then
    python3 - "$OUT" "$RUNS" <<'EOF' | tee -a "$REPORT"
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
# The issue's targets: x ref at or below these (event-loop-2-*: CPU per
# request within x1.05 of one loop, computed below).
targets = {
    "async-uring": 0.90, "event-loop": 1.05,
    "async-tokio": 1.10, "async-tokio-1t": 1.10, "async-tokio-rayon": 1.10,
    "threaded-per-client": 1.50, "threaded-pool": 1.50,
}
rows, order = {}, []
for i in range(1, runs + 1):
    try:
        data = json.load(open(f"{out}/pass{i}/compare.json"))
    except OSError:
        continue
    for c in data["cells"]:
        r = rows.setdefault(c["server"], {"label": c["label"], "cpu": [], "x": [], "note": c["note"], "status": c["status"]})
        if c["server"] not in order:
            order.append(c["server"])
        if c.get("median"):
            r["cpu"].append(c["median"]["server_cpu_us_per_request"])
            if c.get("x_ref") is not None:
                r["x"].append(c["x_ref"])
        else:
            r["status"], r["note"] = c["status"], c["note"]
def fig(v, fmt):
    if not v:
        return "–"
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"
one_loop = statistics.median(rows["event-loop"]["cpu"]) if rows.get("event-loop", {}).get("cpu") else None
print(f"| row | server CPU µs/req, median (min–max) | x ref, median (min–max) | target | met |")
print("|---|---:|---:|---|---|")
for name in order:
    r = rows[name]
    if not r["cpu"]:
        print(f"| {r['label']} | {r['status']}: {r['note']} | – | – | – |")
        continue
    cpu, x = fig(r["cpu"], "{:.2f}"), fig(r["x"], "×{:.2f}")
    target, met = "–", "–"
    if name in targets and r["x"]:
        target = f"x ref ≤ ×{targets[name]:.2f}"
        met = "yes" if statistics.median(r["x"]) <= targets[name] else "NO"
    elif name.startswith("event-loop-2-") and one_loop:
        ratio = statistics.median(r["cpu"]) / one_loop
        target = f"≤ ×1.05 of one loop (is ×{ratio:.2f})"
        met = "yes" if ratio <= 1.05 else "NO"
    print(f"| {r['label']} | {cpu} | {x} | {target} | {met} |")
print(f"\n(per pass: {out}/passN/compare.md; each pass's x ref is against that pass's own reference)")
EOF
else
    say "  python3 not found: per-pass tables are in $OUT/pass*/compare.md"
fi
say ""

# --- 2. RSS per idle connection ------------------------------------------
say "## 2. RSS per connection at $IDLE idle connections (target: ≤ 4 KiB)"
for model in uring event-loop; do
    if start_server "idle-$model" "$SERVER" server --model "$model" --addr 127.0.0.1:0 \
        --framing raw --max-conns $((IDLE + 100)) --idle-timeout 0; then
        line=$(timeout 300 "$LOADGEN" hold --addr "$SERVER_ADDR" --conns "$IDLE" --pid "$SERVER_PID" 2>&1 | tail -1) \
            || line="hold failed: $line"
        say "  $model: $line"
        stop_server "$SERVER_PID"
    else
        say "  $model: skipped"
    fi
done
say ""

# --- 3. connections per loop ----------------------------------------------
say "## 3. Two loops, $BAL_CONNS connections: connections per loop (target: within 25 % of each other)"
for balance in reuseport acceptor; do
    if start_server "balance-$balance" env RUST_LOG=info "$SERVER" server --model event-loop --loops 2 \
        --balance "$balance" --addr 127.0.0.1:0 --framing raw --max-conns $((BAL_CONNS + 100)); then
        timeout 300 "$LOADGEN" run --addr "$SERVER_ADDR" --framing raw --conns "$BAL_CONNS" \
            --requests $((BAL_CONNS * 5)) --timeout 10s >"$OUT/balance-$balance.run" 2>&1 \
            || say "  ($balance: loadgen run reported errors; see $OUT/balance-$balance.run)"
        stop_server "$SERVER_PID"
        per=$(grep -o 'connections per loop: \[[0-9, ]*\]' "$OUT/balance-$balance.err" | tail -1 || true)
        if [ -n "$per" ]; then
            spread=$(echo "$per" | tr -dc '0-9, ' | tr ',' '\n' | awk 'NF { n++; s += $1; if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 } END { if (n && s) printf "max-min = %.1f %% of the mean (%s)", (max - min) * 100 / (s / n), ((max - min) * 100 / (s / n) <= 25 ? "met" : "NOT met") }')
            say "  $balance: $per; $spread"
        else
            say "  $balance: no 'connections per loop' line in $OUT/balance-$balance.err"
        fi
    else
        say "  $balance: skipped"
    fi
done
say ""

# --- 4. syscalls per echo -------------------------------------------------
say "## 4. Syscalls per echo (strace -c -f, $STRACE_REQS echoes over 1 and over 100 connections; start-up and shutdown included)"
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y strace >/dev/null 2>&1 || true
fi
if command -v strace >/dev/null; then
    for conns in 1 100; do
        for name in reference uring; do
            if [ "$name" = reference ]; then cmd=("$REF" --addr 127.0.0.1:0); else
                cmd=("$SERVER" server --model uring --addr 127.0.0.1:0 --framing raw); fi
            tag="strace-$name-$conns"
            if start_server "$tag" strace -f -c -o "$OUT/$tag.txt" "${cmd[@]}"; then
                timeout 300 "$LOADGEN" run --addr "$SERVER_ADDR" --framing raw --conns "$conns" \
                    --requests "$STRACE_REQS" --timeout 10s >"$OUT/$tag.run" 2>&1 || true
                # Stop the traced server (strace's child); strace then writes its table.
                child=$(pgrep -P "$SERVER_PID" | head -1 || true)
                [ -n "$child" ] && stop_server "$child"
                stop_server "$SERVER_PID"
                # Columns: % time, seconds, usecs/call, calls, [errors], syscall;
                # rows sorted by time, so re-sort by calls for the top five.
                total=$(awk '$NF == "total" { print $4 }' "$OUT/$tag.txt" | head -1)
                top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $4, $NF }' "$OUT/$tag.txt" \
                    | sort -rn | head -5 | awk -v n="$STRACE_REQS" '{ printf "%s %.2f, ", $2, $1 / n }')
                if [ -n "$total" ]; then
                    say "  $name, $conns conn: $(awk -v t="$total" -v n="$STRACE_REQS" 'BEGIN { printf "%.2f", t / n }') syscalls per echo ($total in all); per echo: ${top%, } (table: $OUT/$tag.txt)"
                else
                    say "  $name, $conns conn: no strace table (see $OUT/$tag.txt)"
                fi
            else
                say "  $name, $conns conn: skipped"
            fi
        done
    done
else
    say "  strace not available: skipped (apt-get install strace)"
fi
say ""
# --- 5. syscalls and context switches per echo, no tracer in the way ------
# strace stops the server at every syscall, which makes batches bigger; the
# kernel's tracepoints only count. Counts do not depend on how busy the
# machine is, unlike CPU time: they explain a ratio without its noise.
say "## 5. Per echo, counted by the kernel (perf stat tracepoints; pinned as in 1; $PERF_REQS echoes over 100 connections)"
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
    say "| server | syscalls | epoll_wait | io_uring_enter | recv/read | send/write | context switches |"
    say "|---|---:|---:|---:|---:|---:|---:|"
    events=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,sched:sched_switch
    common=(--addr 127.0.0.1:0 --framing raw --max-conns 1024 --idle-timeout 60s --max-frame 1MiB)
    for name in reference event-loop event-loop-2-reuseport event-loop-2-acceptor uring tokio-1t tokio; do
        case $name in
        reference) cmd=("$REF" --addr 127.0.0.1:0) ;;
        event-loop) cmd=("$SERVER" server --model event-loop "${common[@]}") ;;
        event-loop-2-*) cmd=("$SERVER" server --model event-loop --loops 2 --balance "${name#event-loop-2-}" "${common[@]}") ;;
        uring) cmd=("$SERVER" server --model uring "${common[@]}") ;;
        tokio-1t) cmd=("$SERVER" server --model tokio --threads 1 --offload none "${common[@]}") ;;
        tokio) cmd=("$SERVER" server --model tokio --threads "$(nproc)" --offload none "${common[@]}") ;;
        esac
        if start_server "perf-$name" taskset -c 0 "${cmd[@]}"; then
            perf stat -x, -e "$events" -p "$SERVER_PID" -o "$OUT/perf-$name.csv" &
            perf_pid=$!
            sleep 0.5 # perf attaches to the running threads; counting starts then
            timeout 300 taskset -c 1 "$LOADGEN" run --addr "$SERVER_ADDR" --framing raw --conns 100 \
                --requests "$PERF_REQS" --warmup 0s --timeout 10s >"$OUT/perf-$name.run" 2>&1 || true
            kill -INT "$perf_pid" 2>/dev/null || true
            wait "$perf_pid" 2>/dev/null || true
            stop_server "$SERVER_PID"
            # perf -x, lines: count,unit,event,...
            say "$(awk -F, -v n="$PERF_REQS" -v name="$name" '
                $3 ~ /:/ { split($3, e, ":"); k = e[2]; sub(/^sys_enter_?/, "", k); c[k] += $1 }
                END {
                    f = "%.3f"
                    printf "| %s | " f " | " f " | " f " | " f " | " f " | " f " |", name,
                        c[""] / n, c["epoll_wait"] / n, c["io_uring_enter"] / n,
                        (c["read"] + c["recvfrom"]) / n, (c["write"] + c["sendto"]) / n, c["sched_switch"] / n
                }' "$OUT/perf-$name.csv")"
        else
            say "| $name | skipped | | | | | |"
        fi
    done
else
    say "  perf (with tracepoints) not available: skipped (apt-get install linux-perf; needs root or perf_event_paranoid <= -1)"
fi
say ""
say "written to $REPORT"
