"""A small HTTP/1.1 client for one origin, made for StoreClient: keep-alive connections in a pool,
Content-Length or chunked responses, a timeout per request. Nothing else (no TLS, no redirects,
no cookies): the store is a service next door, and its calls are many and small.

Why not httpx: its connection pool checks every connection on every event, so with dozens of
concurrent calls the client, not the store, becomes the bottleneck.

Failures raise TransportError (connection refused or reset, timeout, a malformed response); the caller
makes them ServiceUnavailable. A request on a kept-alive connection that the server had closed
meanwhile (nothing came back at all) is sent once more on a fresh connection. Idle connections are
dropped after `idle_timeout`, before the server (uvicorn keeps them 75 s for us) would close them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEADER = 64 * 1024


class TransportError(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    content: bytes


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http:
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        max_connections: int = 64,
        idle_timeout: float = 30.0,
    ):
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"need an http:// URL, got {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.host_header = u.netloc
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        self._closed = True
        for c in self._idle:
            c.close()
        self._idle.clear()

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER)
        return _Conn(reader, writer)

    def _take_idle(self) -> _Conn | None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # used from another event loop now (tests): its connections are useless
            for c in self._idle:
                c.close()
            self._idle.clear()
            self._loop = loop
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if now - c.idle_since < self.idle_timeout and not c.reader.at_eof():
                return c
            c.close()
        return None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        if self._closed:
            raise TransportError("client closed")
        async with self._slots:
            try:
                return await asyncio.wait_for(self._request(method, path, body, headers), self.timeout)
            except TimeoutError as exc:
                raise TransportError("timed out") from exc

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> Response:
        head = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"Content-Length: {len(body)}",
        ]
        for k, v in self.headers.items():
            head.append(f"{k}: {v}")
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        conn = self._take_idle()
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                try:
                    conn = await self._connect()
                except OSError as exc:
                    raise TransportError(f"connect: {exc}") from exc
            try:
                conn.writer.write(data)
                await conn.writer.drain()
                resp, keep = await self._read(conn.reader)
            except (OSError, asyncio.IncompleteReadError, _Stale) as exc:
                conn.close()
                conn = None
                if reused and attempt == 1 and isinstance(exc, _Stale | ConnectionError):
                    reused = False
                    continue  # the server closed the idle connection: once more on a new one
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return resp
        raise TransportError("unreachable")  # pragma: no cover

    async def _read(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Stale("connection closed before any answer") from exc
            raise
        except asyncio.LimitOverrunError as exc:
            raise TransportError("response header too large") from exc
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise TransportError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _chunked(reader)
        elif "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or status < 200:
            content = b""
        else:  # no length: the body runs to the end of the connection
            content = await reader.read()
            return Response(status, headers, content), False
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        return Response(status, headers, content), keep


class _Stale(Exception):
    pass


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    out = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(out)
        out.append(await reader.readexactly(size))
        await reader.readexactly(2)
