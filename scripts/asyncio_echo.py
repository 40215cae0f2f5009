#!/usr/bin/env python3
"""The course's closing example: an echo server on asyncio.

It is the baseline a reader of the Python tutorial would start from, kept as
close to that example as possible: asyncio.start_server, reader.read,
writer.write, await writer.drain(), loop until EOF. No framing: bytes are
echoed as they arrive (our servers' `--framing raw`).

Run with (two terminals):

    python3 scripts/asyncio_echo.py --addr 127.0.0.1:7006
    nc 127.0.0.1 7006            # type lines, see them come back

or drive it: cargo run --release -p loadgen -- run --addr 127.0.0.1:7006 --framing raw

What to watch: one thread, one event loop; `loadgen compare` puts its
requests/s and CPU per request next to the Rust servers'.

Once bound it prints `listening on HOST:PORT` on stdout (what `loadgen
compare` waits for); SIGTERM or Ctrl-C stops it with exit status 0. If it
cannot listen (the port is taken) it says so in one line and exits 1.
"""

import argparse
import asyncio
import os
import resource
import signal
import sys

READ_CHUNK = 64 * 1024  # same read size as the Rust servers (common::framing::READ_CHUNK)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:  # b"" means EOF: the client closed its side
                break
            writer.write(data)
            # drain() waits while the transport's buffer is over its high-water
            # mark: the asyncio way to say "the peer is slow, stop reading".
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass  # the client went away abruptly: normal, nothing to clean up
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass


async def main() -> int:
    parser = argparse.ArgumentParser(description="asyncio echo server (raw framing)")
    parser.add_argument("--addr", default="127.0.0.1:7006", help="HOST:PORT to listen on (port 0 = any)")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"

    # Every client is a file descriptor: lift the soft limit to the hard one
    # so 10,000 clients fit (the Rust servers do the same).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    try:
        port_number = int(port)
    except ValueError:
        print(f"asyncio_echo.py: --addr {args.addr}: expected HOST:PORT", file=sys.stderr)
        return 2
    try:
        server = await asyncio.start_server(handle, host, port_number, backlog=1024)
    except OSError as e:
        # EADDRINUSE, EACCES (a port below 1024), EADDRNOTAVAIL (not our
        # address): one line naming the address and the reason, no traceback.
        reason = (os.strerror(e.errno) if e.errno else str(e)).lower()
        print(f"asyncio_echo.py: cannot listen on {host}:{port_number}: {reason}", file=sys.stderr)
        return 1
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    print(f"listening on {shown}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print("asyncio_echo: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
