"""The course's TCP client: connect, send, receive, close.

    python3 book/python/tcp_client.py          # with tcp_server.py running

The trap it shows: `recv(1024)` returns whatever has arrived, which for a
long or slow message may be only part of it. TCP carries bytes, not messages.
"""

import socket

# ANCHOR: client
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect(("127.0.0.1", 8080))                           # connect(): the three-way handshake
c.sendall(b"hello\n")
print(c.recv(1024))                                      # may be b"hel": no message boundaries
c.close()                                                # close(): FIN
# ANCHOR_END: client
