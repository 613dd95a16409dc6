"""TCP listeners for IMAP and POP3: PROXY protocol, implicit TLS, STARTTLS, buffered writes, drain.

`Listener` accepts connections and hands each one, as a `Connection`, to a session factory. With PROXY
protocol on, a peer outside the trusted networks (none configured: every peer), a missing header or a
bad one closes the connection before a byte is answered (mailflow.proxy_protocol.read_client). Then the connection counts against the service's caps (mailflow.connections,
by the real client after PROXY, as a `Slot` its session holds: a session that has not logged in lets
the limiter evict it when the service is full): over one, the client gets the listener's refusal
(`* BYE`, POP3 `-ERR [SYS/TEMP]`) and is closed; on an implicit-TLS listener that takes a handshake, so at most
MAX_REFUSING of those run at once and past that a refused connection is closed without a word. Implicit TLS (993/995) is a handshake right after the (optional) PROXY
header; a failed handshake closes the connection. `Connection.write` collects output and `flush` sends
it in one write, so a FETCH of many messages costs few syscalls; `drain` applies back-pressure.
`stop_accepting` closes the listening socket only; sessions finish on their own terms (see app.py).

STARTTLS/STLS: `start_tls` discards every octet the client sent before the switch that no one has used
yet (RFC 3207 §4.2's rule, RFC 2595 §4, RFC 3501 §6.2.1): commands pipelined in the clear never run
inside TLS. Input is read in small pieces until the session says `authenticated` (at most
2 x PREAUTH_READ_SIZE buffered before reading pauses), then in READ_SIZE pieces.

COMPRESS=DEFLATE (RFC 4978): `start_compress` switches both directions to raw DEFLATE (RFC 1951) from
the next octet. Each flush is one compressed piece ended with a sync flush, so the client can read
every response as soon as it arrives. A read inflates at most READ_SIZE octets at a time and keeps the
rest of the input for the next read: a small compressed input cannot make us hold more than that
(the session's framer limits lines and literals as before). Input that is not DEFLATE, or that goes on
after the client ended its stream, is a `CompressionError` (the session closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable

from mailflow import tls
from mailflow.connections import ConnectionLimiter, Refusal, Slot, accept
from mailflow.hostport import split_hostport
from mailflow.proxy_protocol import Network, ProxyError, ProxyUntrusted, read_client
from mailflow_imap_pop3 import metrics

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
PREAUTH_READ_SIZE = 16 * 1024  # before authentication: the stream pauses reading past twice this
FLUSH_AT = 256 * 1024  # octets collected before a FETCH sends what it has
MAX_REFUSING = 64  # refusals on implicit-TLS listeners handshaking at once
DEFLATE_LEVEL = 6  # zlib's default: on mail text, 3 to 5 times smaller for little CPU


class CompressionError(ConnectionError):
    """The client's compressed stream is broken (not DEFLATE, or data after its end)."""


class Connection:
    __slots__ = (
        "reader",
        "writer",
        "peer",
        "local",
        "listener",
        "tls",
        "_out",
        "_size",
        "closed",
        "_loopback",
        "_read_size",
        "slot",
        "_deflate",
        "_inflate",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple,
        listener: str,
        slot: Slot | None = None,
    ):
        self.reader, self.writer = reader, writer
        self.slot = slot  # the limiter's count of this connection
        self.peer = peer  # (ip, port) of the real client (after PROXY)
        self.local = writer.get_extra_info("sockname") or ("", 0)
        self.listener = listener  # "imap", "imaps", "pop3", "pop3s"
        self.tls: str | None = tls.describe(writer.get_extra_info("ssl_object"))
        self._out: list[bytes] = []
        self._size = 0
        self.closed = False
        self._loopback: bool | None = None
        self._read_size = PREAUTH_READ_SIZE
        self._deflate = None  # zlib compressobj / decompressobj once COMPRESS DEFLATE is on
        self._inflate = None

    @property
    def ip(self) -> str:
        return str(self.peer[0])

    @property
    def loopback(self) -> bool:
        if self._loopback is None:
            try:
                self._loopback = ipaddress.ip_address(self.ip).is_loopback
            except ValueError:
                self._loopback = False
        return self._loopback

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._size += len(data)

    def write_many(self, pieces: list[bytes], size: int) -> None:
        """Several pieces (`size` octets in all) that go out as they are, without being joined first."""
        self._out += pieces
        self._size += size

    @property
    def pending(self) -> int:
        return self._size

    async def flush(self) -> None:
        """Send what was written; wait only if the socket's buffer is full (back-pressure)."""
        if self._out and not self.closed:
            out = self._out
            self._out = []
            self._size = 0
            if self._deflate is not None:
                out = [self._compress(out)]
            if len(out) == 1:
                self.writer.write(out[0])
            else:
                self.writer.writelines(out)  # uvloop sends the pieces with one writev
            await self.writer.drain()
        else:
            self._out.clear()
            self._size = 0

    def send_now(self, data: bytes) -> None:
        """Hand what was written plus `data` to the transport without waiting (the drain's last words)."""
        if self.closed:
            return
        self._out.append(data)
        out = self._compress(self._out) if self._deflate is not None else b"".join(self._out)
        self._out.clear()
        self._size = 0
        with contextlib.suppress(Exception):
            self.writer.write(out)

    def _compress(self, pieces: list[bytes]) -> bytes:
        d = self._deflate
        return b"".join([d.compress(p) for p in pieces] + [d.flush(zlib.Z_SYNC_FLUSH)])

    async def read(self) -> bytes:
        if self._inflate is None:
            return await self.reader.read(self._read_size)
        z = self._inflate
        while True:
            data = z.unconsumed_tail or await self.reader.read(self._read_size)
            if not data:
                return b""
            if z.eof:
                raise CompressionError("data after the end of the compressed stream")
            try:
                out = z.decompress(data, self._read_size)
            except zlib.error as exc:
                raise CompressionError(f"not DEFLATE: {exc}") from None
            if out:
                return out
            # a piece of a block: nothing to hand out yet, read on

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    async def start_compress(self, go_ahead: bytes) -> int:
        """Send `go_ahead` (the tagged OK) uncompressed, then compress both ways (RFC 4978 §3). Returns
        how many octets the client had sent that no one read yet: they came before it could know the
        answer, so they cannot be compressed data, and are dropped."""
        self.write(go_ahead)
        await self.flush()
        dropped = self.discard_unread()
        self._deflate = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        return dropped

    def authenticated(self) -> None:
        """The client logged in: read (and buffer) in large pieces from now on."""
        self._read_size = READ_SIZE
        self.reader._limit = READ_SIZE  # StreamReader pauses the transport past 2 x _limit

    def discard_unread(self) -> int:
        """Drop what the stream holds that no one has read yet; returns how many octets."""
        buffer = self.reader._buffer
        n = len(buffer)
        buffer.clear()
        return n

    async def start_tls(self, ctx: ssl.SSLContext, go_ahead: bytes, handshake_timeout: float = 15.0) -> int:
        """Send `go_ahead` (the reply that starts the handshake) and switch to TLS. Returns how many
        octets the client had sent that were dropped unused. Earlier replies are flushed first (that
        may wait for the client); from the drop to the switch nothing awaits, so no plaintext octet
        gets in between. StreamWriter.start_tls's own drain does not wait: the buffer was just drained."""
        await self.flush()
        dropped = self.discard_unread()
        self.writer.write(go_ahead)
        try:
            await self.writer.start_tls(ctx, ssl_handshake_timeout=handshake_timeout)
        except Exception:
            metrics.TLS.labels("failed").inc()
            raise
        metrics.TLS.labels("ok").inc()
        self.tls = tls.describe(self.writer.get_extra_info("ssl_object"))
        return dropped

    def channel_bindings(self) -> dict[str, bytes]:
        """What SCRAM-SHA-256-PLUS can bind to on this connection (mailflow.tls.channel_bindings)."""
        return tls.channel_bindings(self.writer.get_extra_info("ssl_object"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()

    def abort(self) -> None:
        self.closed = True
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            transport.abort()


class TransportConnection:
    """The same interface as Connection over a bare asyncio transport, for sessions that are protocols
    (POP3): `write`/`write_many` collect, `flush_now` hands them to the transport, `flush` also waits
    while the transport says its buffer is full."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: asyncio.Protocol,
        peer: tuple,
        listener: str,
        slot: Slot | None = None,
    ):
        self.transport, self.protocol = transport, protocol
        self.slot = slot
        self.peer = peer
        self.local = transport.get_extra_info("sockname") or ("", 0)
        self.listener = listener
        self.tls: str | None = tls.describe(transport.get_extra_info("ssl_object"))
        self._out: list[bytes] = []
        self._size = 0
        self.closed = False
        self._loopback: bool | None = None
        self._writable: asyncio.Event | None = None  # set while the transport takes more

    ip = Connection.ip
    loopback = Connection.loopback
    write = Connection.write
    write_many = Connection.write_many
    pending = Connection.pending

    def flush_now(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._size = 0
        if self.closed:
            return
        if len(out) == 1:
            self.transport.write(out[0])
        else:
            self.transport.writelines(out)

    async def flush(self) -> None:
        self.flush_now()
        if self._writable is not None and not self.closed:
            await self._writable.wait()

    @property
    def writing_paused(self) -> bool:
        return self._writable is not None

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()
            self._writable = None

    def send_now(self, data: bytes) -> None:
        self._out.append(data)
        self.flush_now()

    async def start_tls(self, ctx: ssl.SSLContext, go_ahead: bytes, handshake_timeout: float = 15.0) -> None:
        """Send `go_ahead` and switch to TLS. Input arrives through the protocol: the session drops
        what it holds right before calling this, and nothing awaits until the TLS layer owns the
        transport, so no plaintext octet gets in between."""
        self.send_now(go_ahead)  # nothing may come between the last plaintext reply and the TLS layer
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(
                self.transport, self.protocol, ctx, server_side=True, ssl_handshake_timeout=handshake_timeout
            )
        except Exception:
            metrics.TLS.labels("failed").inc()
            raise
        metrics.TLS.labels("ok").inc()
        self.tls = tls.describe(self.transport.get_extra_info("ssl_object"))

    def channel_bindings(self) -> dict[str, bytes]:
        """What SCRAM-SHA-256-PLUS can bind to on this connection (mailflow.tls.channel_bindings)."""
        return tls.channel_bindings(self.transport.get_extra_info("ssl_object"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.close()


Handler = Callable[[Connection], Awaitable[None]]


class _Refusal(asyncio.Protocol):
    """Says `text` as soon as the connection is up (after the TLS handshake), then closes."""

    def __init__(self, text: bytes):
        self.text = text

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.text)  # type: ignore[attr-defined]
        transport.close()


class Listener:
    """Accepts on its own socket so that nothing reads a connection before it is ready: the PROXY header
    is read from the raw socket, and only then does an asyncio transport (TLS first, for 993/995) own
    it. A stream set up earlier would buffer the client's first bytes (its TLS ClientHello) where the
    TLS layer never sees them."""

    def __init__(
        self,
        name: str,
        listen: str,
        handler: Handler,
        implicit_tls: ssl.SSLContext | None = None,
        proxy_trusted: tuple[Network, ...] | None = None,  # None: no PROXY protocol; (): nobody trusted
        proxy_timeout: float = 5.0,
        handshake_timeout: float = 15.0,
        protocol: Callable[[tuple, str, Slot], asyncio.Protocol] | None = None,
        limiter: ConnectionLimiter | None = None,
        refusals: dict[Refusal, bytes] | None = None,  # what to say over each cap
    ):
        self.name, self.listen, self.handler = name, listen, handler
        self.limiter = limiter or ConnectionLimiter(0, 0)
        self.refusals = refusals or {}
        self.refusing = 0
        self.protocol = (
            protocol  # (peer, listener name, slot) -> a Protocol with a `.done` future, instead of handler
        )
        self.implicit_tls = implicit_tls
        self.proxy_trusted = proxy_trusted
        self.proxy_timeout, self.handshake_timeout = proxy_timeout, handshake_timeout
        self.sock: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()  # connections being set up or served

    async def start(self) -> Listener:
        host, port = split_hostport(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=1024)
        self.sock.setblocking(False)
        self._port = self.sock.getsockname()[1]
        self._accepting = asyncio.create_task(accept(self.sock, self._take))
        return self

    @property
    def port(self) -> int:
        return self._port

    def stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _track(self, task: asyncio.Task | None) -> None:
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _take(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        self._track(asyncio.create_task(self._setup(conn, peer)))

    async def _setup(self, conn: socket.socket, peer: tuple) -> None:
        loop = asyncio.get_running_loop()
        protocol = None
        slot = Slot(str(peer[0]))  # the PROXY header's client replaces it below

        def release() -> None:  # whichever way the connection ends (uncounted or again: nothing happens)
            self.limiter.release(slot)

        try:
            if self.proxy_trusted is not None:
                peer = await self._proxy(conn, peer)
                if peer is None:
                    conn.close()
                    return
                slot = Slot(str(peer[0]))
            refusal = self.limiter.acquire(slot)
            if refusal is not None:
                await self._refuse(conn, peer, refusal)
                return

            if self.protocol is not None:
                protocol = self.protocol(peer, self.name, slot)
            else:

                async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    self._track(asyncio.current_task())
                    try:
                        await self._serve(reader, writer, peer, slot)
                    finally:
                        release()

                reader = asyncio.StreamReader(limit=PREAUTH_READ_SIZE)
                protocol = asyncio.StreamReaderProtocol(reader, connected)
            await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.implicit_tls,
                ssl_handshake_timeout=self.handshake_timeout if self.implicit_tls else None,
            )
            if self.implicit_tls is not None:
                metrics.TLS.labels("ok").inc()
            if self.protocol is not None:
                await protocol.done  # this task stands for the connection until it ends (the drain waits)
                release()
        except asyncio.CancelledError:
            if self.protocol is not None and protocol is not None:
                protocol.abort()  # the drain cut it
            conn.close()
            release()
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            if self.implicit_tls is not None:
                metrics.TLS.labels("failed").inc()
            log.info("connection setup failed: %s", exc or type(exc).__name__, extra={"peer": str(peer[0])})
            conn.close()
            release()

    async def _refuse(self, conn: socket.socket, peer: tuple, refusal: Refusal) -> None:
        """Over a cap: say so (in TLS on an implicit-TLS listener, while few such handshakes run) and
        close. Nothing is read from the client."""
        metrics.REFUSED.labels(self.name, refusal).inc()
        log.info("connection refused: too many %s", "from this client" if refusal == "per_ip" else "in total",
                 extra={"peer": str(peer[0]), "listener": self.name})  # fmt: skip
        text = self.refusals.get(refusal, b"")
        if self.implicit_tls is None or not text:
            with contextlib.suppress(OSError):
                conn.send(text)  # a fresh socket takes a line without blocking
            conn.close()
            return
        if self.refusing >= MAX_REFUSING:
            conn.close()
            return
        self.refusing += 1
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _Refusal(text),
                conn,
                ssl=self.implicit_tls,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            conn.close()
        finally:
            self.refusing -= 1

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tuple, slot: Slot
    ) -> None:
        try:
            await self.handler(Connection(reader, writer, peer, self.name, slot))
        except (ConnectionError, TimeoutError) as exc:
            log.debug("connection ended: %s", exc)
        except asyncio.CancelledError:  # the drain cut this connection; nothing left to do
            log.info("connection cut by the drain", extra={"peer": str(peer[0])})
        except Exception:
            log.exception("connection handler failed", extra={"peer": str(peer[0])})
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _proxy(self, conn: socket.socket, peer: tuple) -> tuple | None:
        try:
            client = await read_client(conn, peer, self.proxy_trusted or (), self.proxy_timeout)
        except ProxyUntrusted:
            metrics.PROXY.labels("untrusted").inc()
            log.warning("connection from %s, not a trusted proxy: closed", peer[0])
        except (ProxyError, OSError) as exc:
            metrics.PROXY.labels("bad").inc()
            log.warning("bad or missing PROXY header from %s: %s", peer[0], exc)
        else:
            metrics.PROXY.labels("ok").inc()
            return client
        return None
