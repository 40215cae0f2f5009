"""The course's first TCP server, as a Python socket tutorial writes it.

The book puts it next to its Rust twin (tcp-echo/examples/bare.rs) and the
syscalls underneath. Run it, then talk to it from a second terminal:

    python3 book/python/tcp_server.py          # terminal 1
    printf 'hello\n' | nc -N 127.0.0.1 8080     # terminal 2

What to watch: one client at a time; a second `nc` connects but waits.
"""

import socket

# ANCHOR: server
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without "address in use"
s.bind(("127.0.0.1", 8080))                              # bind()
s.listen(5)                                              # listen(): 5 is a backlog, not a limit
while True:
    conn, addr = s.accept()                              # accept(): a new socket per client
    print("connected", addr)
    while True:
        data = conn.recv(1024)                           # whatever has arrived, 1..1024 bytes
        if not data:                                     # b"": the client closed its side
            break
        conn.sendall(data)                               # sendall loops; send() may write less
    conn.close()
# ANCHOR_END: server
