"""StoreClient's HTTP/1.1 transport against a scripted server on 127.0.0.1: keep-alive, Content-Length
and chunked bodies, a reused connection the server closed, timeouts, refused connections."""

from __future__ import annotations

import asyncio

import pytest

from mailflow.store.transport import Http, TransportError
from tests.support import free_port


class Server:
    """Answers each request with the next scripted response; counts connections and requests."""

    def __init__(self, responses: list[bytes], close_after: int | None = None):
        self.responses = list(responses)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader, writer):
        self.connections += 1
        served = 0
        try:
            while self.responses:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                writer.write(self.responses.pop(0))
                await writer.drain()
                served += 1
                if self.close_after and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"


async def test_keep_alive_and_chunked():
    async with Server([ok(b"one"), CHUNKED, ok(b"")]) as srv:
        http = Http(f"http://127.0.0.1:{srv.port}", {"X-Mailflow-Token": "t"})
        assert (await http.request("POST", "/a", b"body")).content == b"one"
        assert (await http.request("GET", "/b")).content == b"hello world"
        assert (await http.request("GET", "/c")).status == 200
        assert srv.connections == 1
        assert srv.requests[0].startswith(b"POST /a HTTP/1.1\r\n") and srv.requests[0].endswith(
            b"\r\n\r\nbody"
        )
        assert b"X-Mailflow-Token: t\r\n" in srv.requests[0]
        await http.close()


async def test_a_closed_idle_connection_is_replaced():
    async with Server([ok(b"1"), ok(b"2")], close_after=1) as srv:
        http = Http(f"http://127.0.0.1:{srv.port}")
        assert (await http.request("GET", "/")).content == b"1"
        await asyncio.sleep(0.05)  # the server has closed it by now
        assert (await http.request("GET", "/")).content == b"2"
        assert srv.connections == 2
        await http.close()


async def test_timeouts_and_refusals_are_transport_errors():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = Http(f"http://127.0.0.1:{port}", timeout=0.2)
    with pytest.raises(TransportError):
        await http.request("GET", "/")
    server.close()
    with pytest.raises(TransportError):
        await Http(f"http://127.0.0.1:{free_port()}").request("GET", "/")
    async with Server([b"NONSENSE\r\n\r\n"]) as srv:
        with pytest.raises(TransportError):
            await Http(f"http://127.0.0.1:{srv.port}").request("GET", "/")
