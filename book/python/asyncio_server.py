"""The course's closing example: an asyncio echo server, as the tutorial has it.

    python3 book/python/asyncio_server.py      # terminal 1 (port 8888)
    nc 127.0.0.1 8888                          # terminal 2

The bug the book is about: `reader.read(100)` is called once. It returns at
most 100 bytes of whatever has arrived, so a longer message is cut, and the
connection is closed after the first read. `read100.py` shows it.
"""

import asyncio


# ANCHOR: handler
async def handle_echo(reader, writer):
    data = await reader.read(100)          # ONE read of at most 100 bytes
    message = data.decode()
    addr = writer.get_extra_info("peername")
    print(f"Received {message!r} from {addr!r}")
    writer.write(data)
    await writer.drain()                   # wait until the kernel took it
    writer.close()                         # ...and hang up, whatever is still coming
    await writer.wait_closed()
# ANCHOR_END: handler


async def main(host="127.0.0.1", port=8888):
    server = await asyncio.start_server(handle_echo, host, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
