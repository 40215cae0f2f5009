"""The course's UDP server and client in one file.

    python3 book/python/udp_echo.py server     # terminal 1
    python3 book/python/udp_echo.py client     # terminal 2

No listen, no accept, no connection: every recvfrom says who sent the
datagram, every sendto says where it goes, and nothing says it arrived.
"""

import socket
import sys

# ANCHOR: udp
if sys.argv[1:] == ["server"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # SOCK_DGRAM: datagrams
    s.bind(("127.0.0.1", 8081))
    while True:
        data, addr = s.recvfrom(65536)                     # one datagram, whole
        s.sendto(data, addr)                               # back to whoever sent it
else:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(1.0)                                      # a lost datagram is only a timeout
    c.sendto(b"hello", ("127.0.0.1", 8081))
    print(c.recvfrom(65536))
# ANCHOR_END: udp
