"""A slowloris client: it sends what starts a piece of input (a command line, a literal, a message) and
then one byte every few seconds, never finishing it (or a whole command every second, never logging
in), and listens for the server to give up."""

from __future__ import annotations

import asyncio
import contextlib


async def dribble(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: bytes, every: float, each: bytes = b"x"
) -> tuple[float, bytes]:
    """Send `start`, then `each` every `every` seconds until the server closes the connection. Returns
    how long that took and the last line the server said (CRLF dropped; b"" if it said nothing)."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def drip() -> None:
        with contextlib.suppress(OSError, ConnectionError):
            writer.write(start)
            while True:
                await asyncio.sleep(every)
                writer.write(each)
                await writer.drain()

    dripping = asyncio.ensure_future(drip())
    last = b""
    try:
        with contextlib.suppress(OSError, ConnectionError):
            while line := await reader.readline():
                last = line
    finally:
        dripping.cancel()
        writer.close()
    return loop.time() - began, last.rstrip(b"\r\n")
