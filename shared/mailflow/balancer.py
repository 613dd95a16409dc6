"""A TCP front for several replicas of one service on one host, as a Kubernetes Service is for its pods:
`Stack(replicas=2)` puts one before every mail port and every HTTP port, so clients and the other
services keep one address while replicas die and come back.

Each new connection goes to the next backend in turn that accepts it (a backend that refuses, because
its process is gone, is skipped at once); then the bytes are copied both ways until both sides have
closed. What a backend was serving when it died breaks, as it would behind a real load balancer; the
client connects again and lands on a live one. TLS passes through untouched (SMTPS, IMAPS, STARTTLS).
Loopback only, no limits of its own beyond a 64 KiB read: a harness for tests and `mailflow up`, not a
product's edge.

    front = Balancer("127.0.0.1", 2025, [31001, 31002]).start()   # its own thread and event loop
    front.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading

CHUNK = 64 * 1024


class Balancer:
    def __init__(self, host: str, port: int, backends: list[int]):
        self.host, self.port, self.backends = host, port, list(backends)
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> Balancer:
        self._thread = threading.Thread(target=self._run, name=f"balancer-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"balancer on {self.host}:{self.port} did not start")
        if self._error is not None:
            raise RuntimeError(f"balancer on {self.host}:{self.port}: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port, backlog=1024, reuse_address=True)
            )
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for k in range(len(self.backends)):
            port = self.backends[(first + k) % len(self.backends)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(self.host, port), 5)
            except (OSError, TimeoutError):
                continue
        return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        backend = await self._connect()
        if backend is None:  # no replica alive: the client sees the connection closed, as with a refusal
            client_w.close()
            return
        backend_r, backend_w = backend
        try:
            await asyncio.gather(_pump(client_r, backend_w), _pump(backend_r, client_w))
        finally:
            for w in (client_w, backend_w):
                w.close()


async def _pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Copy until EOF (then pass the half-close on) or until either side breaks (then close both)."""
    try:
        while data := await r.read(CHUNK):
            w.write(data)
            await w.drain()
        if w.can_write_eof():
            w.write_eof()
    except (OSError, ConnectionError):
        w.close()
