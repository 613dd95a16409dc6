"""One SMTP client's bytes: an asyncio.Protocol with a Framer, a write buffer, flow control, the idle
timer and the switch to TLS. It knows nothing of SMTP commands; its `session` runs the dialogue.

Why our own protocol and not aiosmtpd's SMTP class: with uvloop, aiosmtpd spends ~0.6 ms of CPU per
4 KiB message doing nothing (a StreamReader.readuntil and an awaited drain per line and per reply).
Here `data_received` appends to the framer and wakes the session's task, which takes whole commands
and whole DATA bodies out of one buffer with bytes.find (README.md, "Design").

Reading: `more()` waits for input; the readers (`read_line`, `read_body`, `read_chunk`) wait until
the framer has the whole piece. Past `buffer_limit` octets held, reading pauses until the session
catches up. Writing: `write` collects, and what was collected goes out in one write when the session
needs more input (RFC 2920: the replies of a pipelined group leave together); while the transport's
buffer is full the session stops reading commands. The input deadline (mailflow.connections.
InputDeadline: `idle_timeout` for each command, plus a second per `min_input_rate` octets of it, and
`session_lifetime` until AUTH) fires `session.idle()` only while the session waits for the client;
the session restarts its clock (`deadline.begin()`) after each command.
Failures: the client going away (or `close`) makes every wait raise ConnectionLost, which ends the
session quietly; a failed TLS handshake aborts the connection and raises ConnectionLost too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol

from mailflow import tls as mftls
from mailflow.connections import InputDeadline
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress.framing import Framer

log = logging.getLogger(__name__)


class ConnectionLost(Exception):
    """The connection is closed: nothing more will be read."""


class Owner(Protocol):
    """What the connection tells its session."""

    def opened(self) -> None: ...
    def lost(self) -> None: ...
    def idle(self) -> None: ...


class Connection(asyncio.Protocol):
    def __init__(
        self, session: Owner, idle_timeout: float, min_rate: float, lifetime: float, buffer_limit: int
    ):
        self.session = session
        self.idle_timeout, self.min_rate, self.lifetime = idle_timeout, min_rate, lifetime
        self.buffer_limit = buffer_limit
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.framer = Framer()
        self.out: list[bytes] = []
        self.tls: str | None = None  # "TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is up
        self.waiter: asyncio.Future | None = None  # set while the session waits for the client
        self.write_ready: asyncio.Future | None = None
        self.closed = False
        self.eof = False  # the client half-closed: what is buffered is still answered
        self.reading_paused = False
        self.deadline: InputDeadline | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:  # implicit TLS (SMTPS): the handshake is behind us
            self.tls = mftls.describe(ssl_object)
            metrics.TLS.labels("ok").inc()
        self.deadline = InputDeadline(
            self.idle_timeout, self.min_rate, self._expired, lambda: self.waiter is None, self.lifetime
        )
        self.session.opened()

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        framer.buf += data
        self.deadline.received(len(data))
        if len(framer.buf) > self.buffer_limit and not self.reading_paused and self.transport:
            self.transport.pause_reading()
            self.reading_paused = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep our half open so the commands already received still get their replies (plain TCP;
        # a TLS transport cannot half-close and closes either way).
        return self.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
        self._wake()
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)
        self.session.lost()

    def pause_writing(self) -> None:
        if self.write_ready is None or self.write_ready.done():
            self.write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    # --- what the session uses ----------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """The session waits for the client (between commands, or for more of a message)."""
        return self.waiter is not None

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def close(self, last: bytes | None = None) -> None:
        """Send what is pending (and `last`), then close. The session ends at its next read."""
        if last is not None:
            self.out.append(last)
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self._wake()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    async def more(self) -> None:
        """Wait for more input; what was written goes out first (one write per pipelined group)."""
        self.flush()
        if self.closed or self.eof:  # nothing more will come
            raise ConnectionLost
        if self.write_ready is not None and not self.write_ready.done():
            await self.write_ready
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.closed:
            raise ConnectionLost

    async def read_line(self, limit: int) -> bytes:
        """A whole line with its terminator, or framing.TOO_LONG."""
        while (line := self.framer.line(limit)) is None:
            await self.more()
        return line

    async def read_body(self, limit: int) -> tuple[bytes, bool]:
        """DATA's text up to <CRLF>.<CRLF>: (text, too_big)."""
        while (got := self.framer.body(limit)) is None:
            await self.more()
        return got

    async def read_chunk(self, n: int, keep: bool) -> bytes:
        """Exactly n octets (BDAT); with keep=False they are dropped as they arrive."""
        while (data := self.framer.chunk(n, keep)) is None:
            await self.more()
        return data

    def channel_bindings(self) -> dict[str, bytes]:
        """What SCRAM-SHA-256-PLUS can bind to on this connection (mailflow.tls.channel_bindings)."""
        if self.transport is None or self.tls is None:
            return {}
        return mftls.channel_bindings(self.transport.get_extra_info("ssl_object"))

    async def start_tls(self, ctx: ssl.SSLContext, handshake_timeout: float) -> None:
        """Switch to TLS (the go-ahead was written). Everything the client sent before is dropped
        (RFC 3207 §4.2, CVE-2011-0411 class). Raises ConnectionLost if the handshake fails."""
        self.flush()
        self.framer.discard()
        try:
            # Awaited directly, not through wait_for: a task would start a loop iteration later, and the
            # ClientHello arriving meanwhile would land in our plaintext buffer (and the handshake hang).
            transport = await self.loop.start_tls(
                self.transport, self, ctx, server_side=True, ssl_handshake_timeout=handshake_timeout
            )
        except Exception as exc:
            metrics.TLS.labels("failed").inc()
            log.info("TLS handshake failed: %s", exc)
            self.abort()
            raise ConnectionLost from exc
        metrics.TLS.labels("ok").inc()
        self.transport = transport
        self.tls = mftls.describe(transport.get_extra_info("ssl_object"))

    # --- plumbing -----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _expired(self) -> None:
        if not self.closed:
            self.session.idle()
