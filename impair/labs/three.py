# Three messages as three sends, 5 ms apart, with TCP_NODELAY (so each leaves
# as its own segment), then half-close and print every recv() until EOF.
# Run: python3 impair/labs/three.py PORT   (see impair/README.md, Lab 3)
import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.settimeout(2)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for m in (b'one\n', b'two\n', b'three\n'):
    s.sendall(m)          # three sends, 5 ms apart
    time.sleep(0.005)
s.shutdown(socket.SHUT_WR)
while (b := s.recv(1024)): print(b)
