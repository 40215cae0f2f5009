# A client that sends 1 KiB lines and never reads its echoes: to the server
# behind `impair tcp --direction down --stall-after ...` it has stopped
# reading. Bounded: 64 MiB at most, and a 15 s timeout on each send.
# Run: python3 impair/labs/stalled.py PORT   (see impair/README.md, Lab 4)
import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.settimeout(15)
line = b'x' * 1023 + b'\n'
sent = 0
start = time.time()
try:
    while sent < (64 << 20):
        s.sendall(line * 64); sent += 64 * 1024
except socket.timeout:
    pass
except OSError as e:
    print(f"stalled client: {e}")
print(f"stalled client: sent {sent >> 10} KiB in {time.time() - start:.1f} s, then stopped")
