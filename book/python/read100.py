"""Show what `reader.read(100)` in the course's asyncio server gets wrong.

    python3 book/python/read100.py

Starts the course's handler (asyncio_server.py) on a port the kernel picks,
sends it one 150-byte line, and prints what came back. scripts/book.sh runs
it and puts the output in the book, so the book shows what the code does.
"""

import asyncio

from asyncio_server import handle_echo


# ANCHOR: demo
async def main():
    server = await asyncio.start_server(handle_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = b"x" * 149 + b"\n"
    writer.write(message)
    await writer.drain()
    echo = await reader.read()             # everything until the server's EOF
    print(f"sent {len(message)} bytes, got {len(echo)} back, then the server closed")
    print("the newline came back:", echo.endswith(b"\n"))
    writer.close()
    server.close()
# ANCHOR_END: demo


if __name__ == "__main__":
    asyncio.run(main())
