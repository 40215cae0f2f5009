#!/usr/bin/env python3
"""What happens to new clients while one loop of a multi-loop server is stuck?

The experiment of async-server's README ("A stalled loop"), measured:
`async-server --model event-loop --loops 2 --balance MODE --work W`, one
client sends a big frame whose `--work` keeps its loop busy for a second or
more (the work runs inline: nothing else on that loop moves), and then
eight small clients connect, 20 ms apart, each timing its own echo. A client
that landed on the free loop is answered in about a millisecond; one that
landed on the stuck loop waits until the big frame is done.

    cargo build --release -p async-server
    scripts/stalled_loop.py [--bin target/release/async-server] [--runs 3]

Prints, per balance mode and run: how many of the 8 waited longer than
--slow (default 200 ms), the worst wait, and how long the stall lasted
(the big frame's echo time). Loopback only; every socket has a timeout and
every server is stopped.

With `--balance acceptor` loop 0 both accepts and serves, so the big frame
is sent on the *second* connection (the acceptor deals 0, 1, 0, 1...): it
lands on loop 1 and the acceptor stays free to notice the stall. With
`reuseport` the kernel picks the listener by a hash of the client's
address and port, so which loop stalls is up to it.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

CLIENTS = 8


def start(binary, mode, work):
    cmd = [binary, "server", "--model", "event-loop", "--loops", "2",
           "--balance", mode, "--work", str(work), "--addr", "127.0.0.1:0",
           "--max-frame", "1MiB"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT"; EOF if it failed
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"{' '.join(cmd)}: no 'listening on' line (got {line!r})")
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def echo_time(addr, payload, timeout):
    """Connect, send one line, read its echo; seconds taken, or None."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(payload + b"\n")
            want = len(payload) + 1
            got = 0
            while got < want:
                chunk = s.recv(65536)
                if not chunk:
                    return None
                got += len(chunk)
            return time.monotonic() - t0
    except OSError:
        return None


def one_run(binary, mode, work, slow, timeout):
    proc, addr = start(binary, mode, work)
    try:
        if mode == "acceptor":
            # Connection 0 goes to loop 0 (the acceptor): a small one, so the
            # big frame below is dealt to loop 1.
            echo_time(addr, b"first", timeout)
        stall = {}
        big = threading.Thread(target=lambda: stall.update(
            t=echo_time(addr, b"x" * 100_000, timeout)))
        big.start()
        time.sleep(0.2)  # pacing, not synchronisation: let the big frame arrive
        waits = [None] * CLIENTS
        threads = []
        for i in range(CLIENTS):
            t = threading.Thread(target=lambda i=i: waits.__setitem__(
                i, echo_time(addr, b"hi", timeout)))
            t.start()
            threads.append(t)
            time.sleep(0.02)
        for t in threads:
            t.join()
        big.join()
        return waits, stall.get("t")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default="target/release/async-server")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=int, default=20000)
    p.add_argument("--slow", type=float, default=0.2,
                   help="a wait longer than this many seconds counts as waited")
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin}: not found; cargo build --release -p async-server")
    for mode in ("reuseport", "acceptor"):
        for run in range(1, a.runs + 1):
            waits, stall = one_run(a.bin, mode, a.work, a.slow, a.timeout)
            done = [w for w in waits if w is not None]
            slow = sum(1 for w in done if w > a.slow)
            worst = max(done) if done else float("nan")
            lost = CLIENTS - len(done)
            stall_s = f"{stall:.2f} s" if stall is not None else "no echo"
            print(f"{mode:9} run {run}: {slow} of {CLIENTS} waited > {a.slow * 1000:.0f} ms, "
                  f"worst {worst * 1000:.0f} ms, no echo {lost}; the stall (big frame) {stall_s}",
                  flush=True)


if __name__ == "__main__":
    main()
