#!/usr/bin/env python3
"""Small socket programs for peek's lessons: each runs a server and a client
on 127.0.0.1 in one process and prints what the application saw, so that
`peek` can show what the wire saw.

    peek -- python3 peek/lessons/wire.py sticky              # three send()s, one late recv()
    peek -- python3 peek/lessons/wire.py sticky --cork       # TCP_CORK: one segment
    peek -- python3 peek/lessons/wire.py sticky --nodelay --pause 50 --reader eager
    peek -- python3 peek/lessons/wire.py halfclose
    peek -- python3 peek/lessons/wire.py close               # clean close: FIN
    peek -- python3 peek/lessons/wire.py close --unread      # unread data: RST
    peek -- python3 peek/lessons/wire.py udp-closed          # ICMP port unreachable
    peek --mtu 1500 -- python3 peek/lessons/wire.py big 16384

Every blocking call has a timeout; nothing here waits on a sleep except
the pauses that are the point of a lesson.
"""
import argparse
import select
import socket
import sys
import threading
import time

TIMEOUT = 10.0


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(TIMEOUT)
    return s


def serve(lst, handler):
    """Accept one connection on `lst` in a thread and run `handler` on it."""

    def run():
        conn, _ = lst.accept()
        conn.settimeout(TIMEOUT)
        with conn:
            handler(conn)

    t = threading.Thread(target=run)
    t.start()
    return t


def connect(lst, nodelay=False):
    c = socket.create_connection(lst.getsockname(), timeout=TIMEOUT)
    if nodelay:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def read_all(conn):
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def sticky(args):
    """Three frames written with three send()s; how many segments, how many recv()s?"""
    got = []
    done = threading.Event()

    def server(conn):
        if args.reader == "late":
            # A busy server: it reads only once the client has sent all three.
            done.wait(TIMEOUT)
        while chunk := conn.recv(65536):
            got.append(chunk)

    lst = listener()
    t = serve(lst, server)
    c = connect(lst, nodelay=args.nodelay)
    if args.cork:
        # TCP_CORK: hold partial segments until uncorked (or 200 ms pass).
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for frame in (b"one\n", b"two\n", b"three\n"):
        c.send(frame)
        if args.pause:
            time.sleep(args.pause / 1000)
    if args.cork:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    c.shutdown(socket.SHUT_WR)
    done.set()
    t.join()
    c.close()
    print(f"client: 3 send() calls; server: {len(got)} recv() calls returned {got}")


def halfclose(args):
    """The client says "no more from me" (FIN), then still reads the reply."""

    def server(conn):
        data = read_all(conn)  # to EOF: the client's FIN
        conn.sendall(f"got {len(data)} bytes after your FIN".encode())

    lst = listener()
    t = serve(lst, server)
    c = connect(lst)
    c.sendall(b"hello")
    c.shutdown(socket.SHUT_WR)
    print("client: sent 5 bytes, shut down writing, reading the reply:", read_all(c))
    t.join()
    c.close()


def close(args):
    """The server closes with the client's bytes unread (RST), or after reading them (FIN)."""

    def server(conn):
        if args.unread:
            select.select([conn], [], [], TIMEOUT)  # the bytes are here, unread
        else:
            conn.recv(100)

    lst = listener()
    t = serve(lst, server)
    c = connect(lst)
    c.sendall(b"hello")
    t.join()
    try:
        print("client: recv() after the server's close returned", c.recv(100))
    except ConnectionResetError as e:
        print("client: recv() after the server's close raised", repr(e))
    c.close()


def udp_closed(args):
    """A connected UDP socket sends to a port nobody listens on."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # now nobody listens on `port`
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))  # UDP connect: no packet, just a default peer
    print(f"client: send() to port {port} returned", s.send(b"anyone there?"))
    try:
        s.recv(100)
    except ConnectionRefusedError as e:
        print("client: the next recv() raised", repr(e))
    s.close()


def big(args):
    """One send() of SIZE bytes; the server counts what arrives."""
    got = []

    def server(conn):
        data = read_all(conn)
        got.append(len(data))
        conn.sendall(b"ok")

    lst = listener()
    t = serve(lst, server)
    c = connect(lst)
    c.sendall(b"x" * args.size)
    c.shutdown(socket.SHUT_WR)
    reply = read_all(c)
    t.join()
    c.close()
    print(f"client: one sendall() of {args.size} bytes; server received {got[0]}, replied {reply}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="lesson", required=True)
    s = sub.add_parser("sticky")
    s.add_argument("--nodelay", action="store_true", help="TCP_NODELAY: no Nagle")
    s.add_argument("--pause", type=int, default=0, help="milliseconds between send()s")
    s.add_argument("--cork", action="store_true", help="TCP_CORK around the three send()s")
    s.add_argument("--reader", choices=["late", "eager"], default="late",
                   help="late: the server reads after the client is done")
    s.set_defaults(run=sticky)
    sub.add_parser("halfclose").set_defaults(run=halfclose)
    s = sub.add_parser("close")
    s.add_argument("--unread", action="store_true")
    s.set_defaults(run=close)
    sub.add_parser("udp-closed").set_defaults(run=udp_closed)
    s = sub.add_parser("big")
    s.add_argument("size", type=int)
    s.set_defaults(run=big)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
