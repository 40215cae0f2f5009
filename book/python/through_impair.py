#!/usr/bin/env python3
"""The book's `impair` runs: a server, the `impair` relay in front of it, and
a client pointed at the relay, all on 127.0.0.1 with ports the kernel chose,
so the build can record them without a second terminal.

    python3 book/python/through_impair.py udp --toxics '--loss 10% --seed 7' --client '--count 12'
        udp-echo's server behind `impair udp`, udp-echo's client in front
    python3 book/python/through_impair.py tcp-split --toxics '--split=4 --seed 7'
        one send() through `impair tcp`; a Python server prints each recv()
    python3 book/python/through_impair.py tcp-coalesce --toxics '--coalesce 50ms'
        three send()s, straight to the server and then through the relay

It prints the commands it ran (with the real ports), what each program
printed, and the relay's closing summary. Every wait has a deadline; the
pauses between the three send()s are the lesson, not synchronisation.
"""
import argparse
import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import time

TIMEOUT = 10.0


def wait_for_address(proc, what):
    """The `listening on ADDR` line every program of the workspace prints."""
    deadline = time.monotonic() + TIMEOUT
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"listening on "):
                return line.decode().split()[-1]
            if not line:
                break
    proc.kill()
    sys.exit(f"{what} did not say where it listens: {line!r}")


def start(cmd, what):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, wait_for_address(proc, what)


def stop(proc):
    """SIGTERM, then the relay's summary from its log (the line after 'stopped')."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    for line in err.decode(errors="replace").splitlines():
        if " stopped: " in line:
            # Drop the log prefix (time and module): the counts are the point.
            print("relay summary: " + line.split(" stopped: ", 1)[1])


def show(cmd):
    return " ".join(shlex.quote(os.path.basename(c) if i == 0 else c) for i, c in enumerate(cmd))


def relay_cmd(bin_dir, proto, upstream, toxics):
    return [os.path.join(bin_dir, "impair"), proto, "--listen", "127.0.0.1:0",
            "--upstream", upstream, *shlex.split(toxics)]


def udp(args):
    server_cmd = [os.path.join(args.bin, "udp-echo"), "server", "--addr", "127.0.0.1:0"]
    server, server_addr = start(server_cmd, "udp-echo server")
    cmd = relay_cmd(args.bin, "udp", server_addr, args.toxics)
    relay, relay_addr = start(cmd, "impair")
    print(f"server: {show(server_cmd)}  (listening on {server_addr})")
    print(f"relay:  {show(cmd)}  (listening on {relay_addr})")
    client_cmd = [os.path.join(args.bin, "udp-echo"), "client", "--addr", relay_addr,
                  *shlex.split(args.client)]
    print(f"client: {show(client_cmd)}")
    try:
        done = subprocess.run(client_cmd, capture_output=True, timeout=60)
        sys.stdout.write(done.stdout.decode(errors="replace"))
        sys.stdout.write(done.stderr.decode(errors="replace"))
        print(f"(client exit status {done.returncode})")
    finally:
        stop(relay)
        server.terminate()
        server.wait(timeout=TIMEOUT)


class RecvServer:
    """A TCP server that records each recv() of each connection, in order."""

    def __init__(self):
        self.lst = socket.socket()
        self.lst.bind(("127.0.0.1", 0))
        self.lst.listen(4)
        self.lst.settimeout(TIMEOUT)
        self.addr = "%s:%d" % self.lst.getsockname()

    def serve_one(self):
        """Accept one connection in a thread; the list fills with its reads."""
        reads = []

        def run():
            conn, _ = self.lst.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                while chunk := conn.recv(65536):
                    reads.append(chunk)

        t = threading.Thread(target=run)
        t.start()
        return t, reads


def send_pieces(addr, pieces, pause):
    host, port = addr.rsplit(":", 1)
    c = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    # Without Nagle each send() leaves at once as its own segment.
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)
            c.sendall(piece)
        c.shutdown(socket.SHUT_WR)


def report(where, pieces, reads):
    print(f"-- {where}")
    print(f"client: {len(pieces)} send() calls: {pieces}")
    print(f"server: {len(reads)} recv() calls returned {reads}")


def tcp(args, pieces, pause, direct_too):
    srv = RecvServer()
    cmd = relay_cmd(args.bin, "tcp", srv.addr, args.toxics)
    relay, relay_addr = start(cmd, "impair")
    try:
        print(f"server: a Python server printing each recv()  (listening on {srv.addr})")
        print(f"relay:  {show(cmd)}  (listening on {relay_addr})")
        targets = [("straight to the server", srv.addr)] if direct_too else []
        targets.append(("through the relay", relay_addr))
        for where, addr in targets:
            t, reads = srv.serve_one()
            send_pieces(addr, pieces, pause)
            t.join(TIMEOUT)
            report(where, pieces, reads)
    finally:
        stop(relay)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["udp", "tcp-split", "tcp-coalesce"])
    p.add_argument("--bin", default="target/debug", help="where udp-echo and impair are")
    p.add_argument("--toxics", default="", help="impair's options, as one string")
    p.add_argument("--client", default="", help="udp-echo client's options, as one string")
    args = p.parse_args()
    if args.mode == "udp":
        udp(args)
    elif args.mode == "tcp-split":
        tcp(args, [b"hello, sticky world\n"], 0, direct_too=False)
    else:
        tcp(args, [b"one\n", b"two\n", b"three\n"], 0.005, direct_too=True)


if __name__ == "__main__":
    main()
