#!/usr/bin/env python3
"""How long does each server take to stop on SIGTERM while a client refuses to read?

The scenario of issue 11: 20 well-behaved clients, each with one frame in
flight, and one client that writes several MiB and never reads. Every server
must echo the 20 frames, and exit within its --grace whatever the
non-reader does.

    cargo build --workspace --release
    scripts/shutdown_times.py [--bin-dir target/release] [--grace 2s] [--runs 3]

Prints one line per server and run: seconds from SIGTERM to exit, the exit
status, and how many of the 20 echoes came back. Loopback only; every wait
is bounded.
"""
import argparse
import os
import ssl
import tempfile
import signal
import socket
import subprocess
import sys
import threading
import time

SERVERS = [
    ("tcp-echo", ["tcp-echo", "server"]),
    ("threaded per-client", ["threaded-server", "server", "--model", "per-client"]),
    ("threaded pool", ["threaded-server", "server", "--model", "pool"]),
    ("async tokio", ["async-server", "server", "--model", "tokio"]),
    ("async event-loop", ["async-server", "server", "--model", "event-loop"]),
    ("async uring", ["async-server", "server", "--model", "uring"]),
    ("tls-echo", ["tls-echo", "server"]),
]


def start(bin_dir, argv, grace, extra=()):
    cmd = [os.path.join(bin_dir, argv[0])] + argv[1:] + ["--addr", "127.0.0.1:0", "--grace", grace, *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(10)
    if not box or not box[0].startswith("listening on "):
        p.kill()
        raise RuntimeError(f"{argv[0]} did not announce its address")
    host, port = box[0].split()[-1].rsplit(":", 1)
    return p, (host.strip("[]"), int(port))


def accept_backlog(port):
    """Connections waiting in the listener's accept queue (/proc/net/tcp*:
    for a LISTEN socket, rx_queue is the current backlog)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        total += int(cols[4].split(":")[1], 16)
        except OSError:
            pass
    return total


def one_run(bin_dir, argv, grace):
    tls = argv[0] == "tls-echo"
    ca = os.path.join(tempfile.mkdtemp(), "ca.pem")
    p, addr = start(bin_dir, argv, grace, ["--ca-out", ca] if tls else [])
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=ca)

    def connect():
        s = socket.create_connection(addr, timeout=5)
        return ctx.wrap_socket(s, server_hostname="localhost") if ctx else s

    try:
        # The non-reader: writes until its send buffer and the server's
        # receive queue are full, never reads a byte.
        hog = connect()
        hog.settimeout(0.05)
        sent = 0
        chunk = b"x" * 65535 + b"\n"
        deadline = time.monotonic() + 3
        while sent < 8 << 20 and time.monotonic() < deadline:
            try:
                sent += hog.send(chunk)
            except (TimeoutError, BlockingIOError, ssl.SSLWantWriteError):
                pass
        good = []
        for _ in range(20):
            s = connect()
            s.sendall(b"ping\n")
            good.append(s)
        # Frames in flight, not connections in the backlog: wait (bounded)
        # until the server has accepted every client. A backlog that never
        # empties (the iterative tcp-echo, busy with the non-reader) is the
        # design: those clients are never accepted and get a reset.
        settle = time.monotonic() + 2
        while accept_backlog(addr[1]) and time.monotonic() < settle:
            time.sleep(0.01)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        echoed = 0
        for s in good:
            s.settimeout(max(0.1, 15 - (time.monotonic() - t0)))
            try:
                if s.recv(16) == b"ping\n":
                    echoed += 1
            except OSError:
                pass
        try:
            code = p.wait(timeout=max(0.1, 15 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None, "still running after 15 s", echoed, len(good)
        return time.monotonic() - t0, code, echoed, len(good)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--grace", default="2s")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for name, argv in SERVERS:
        for run in range(a.runs):
            try:
                secs, code, echoed, n = one_run(a.bin_dir, argv, a.grace)
            except (OSError, RuntimeError) as e:
                print(f"{name:22} run {run + 1}: {e}")
                continue
            took = "hung" if secs is None else f"{secs:5.2f} s"
            print(f"{name:22} run {run + 1}: stopped in {took}, exit {code}, {echoed}/{n} echoes", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
