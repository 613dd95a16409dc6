"""Protocol sessions driven in this process, bytes in and bytes out, for fuzzing whole dialogues.

The real `Session` classes of smtp-ingress and POP3 run unchanged on an event loop with a `Transport`
that is a list of written bytes instead of a socket (no port, no thread: thousands of dialogues a
second). Behind them are in-memory parts: smtp-ingress's IngressHandler with a small directory and a
MemoryQueue; POP3 over `_Maildrop`, one user's three messages made new for every dialogue so no input
depends on the ones before it. `_Maildrop` is no store: it answers the few calls a POP3 session makes
without any I/O, which the real store (what the protocol tests use) cannot do thousands of times a second.

A dialogue ends when the input is used up: the client half-closes and the session may answer what it
has; then the connection is dropped. `Dialogue.output` is everything the server wrote.
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass, field

from mailflow.errors import Conflict
from mailflow.store.api import (
    DELETED,
    MailboxStatus,
    MessageMeta,
    Principal,
    Resolution,
    Selected,
    StoreResult,
)

LOCAL_DOMAIN = "example.test"
USER, PASSWORD = "alice@example.test", "alice-pw"
MESSAGES = (
    b"From: a@b.test\r\nSubject: one\r\n\r\nfirst\r\n",
    b"From: a@b.test\r\nSubject: two\r\n\r\n.dot line\r\n\r\nsecond\r\n",
    b"Subject: three\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\npart\r\n--x--\r\n",
)
_SETTLE_ROUNDS = 200  # loop iterations a session gets to react to one chunk (all parts are in memory)


class FakeTransport(asyncio.Transport):
    """What a socket would have been sent; close() reports connection_lost on the next loop turn."""

    def __init__(self, protocol: asyncio.Protocol, peer: str = "127.0.0.1"):
        super().__init__()
        self.protocol = protocol
        self.output = bytearray()
        self.closing = False
        self.extra = {"peername": (peer, 40000), "sockname": ("127.0.0.1", 25), "ssl_object": None}

    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)

    def write(self, data) -> None:
        if not self.closing:
            self.output += data

    def writelines(self, list_of_data) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def chunks(data: bytes) -> list[bytes]:
    """The input cut at places that depend only on it: a parser must not care where reads end."""
    rng = random.Random(len(data) * 7919 + (data[0] if data else 0))
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 2, 7, 64, 512, 4096))
        out.append(data[i : i + n])
        i += n
    return out


async def _settle(done) -> None:
    for _ in range(_SETTLE_ROUNDS):
        if done():
            return
        await asyncio.sleep(0)


async def _feed(data: bytes, receive, ended, idle) -> None:
    """The input in chunks, each once the session has reacted to the one before; stops when it ended."""
    await _settle(idle)
    for piece in chunks(data):
        if ended():
            break
        receive(piece)
        await _settle(idle)


@dataclass
class Dialogue:
    output: bytes
    closed: bool
    queued: list = field(default_factory=list)  # smtp: (QueuedMessage, raw) accepted


# --- smtp-ingress ----------------------------------------------------------------------------------------


class _Directory:
    """Every address at example.test is a user; alice authenticates with her password."""

    async def resolve(self, address: str) -> Resolution:
        local, _, domain = address.rpartition("@")
        if domain.lower() != LOCAL_DOMAIN:
            return Resolution(address, "not_local")
        if local.lower().startswith("nobody"):
            return Resolution(address, "unknown_user")
        return Resolution(address, "local", (address.lower(),))

    async def is_local_domain(self, domain: str) -> bool:
        return domain.lower() == LOCAL_DOMAIN

    async def authenticate(self, username: str, password: str, service: str = "smtp") -> Principal | None:
        if username.lower() != USER or password != PASSWORD:
            return None
        return Principal(user_id=1, address=USER, addresses=(USER,), token="t")

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        return b"fuzz-salt-16-oct", 4096

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "smtp"
    ) -> tuple[Principal, bytes] | None:
        verifier = _scram_verifier()
        if username.lower() != USER or not verifier.check(auth_message, client_proof):
            return None
        return Principal(user_id=1, address=USER, addresses=(USER,), token="t"), verifier.signature(auth_message)

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        return set()


@functools.cache
def _scram_verifier():
    from mailflow.scram import Verifier

    return Verifier.make(PASSWORD, 4096, b"fuzz-salt-16-oct")


class SmtpDriver:
    """smtp-ingress's Session with the MX listener's policy (AUTH offered without TLS, so the SASL
    decoding is reachable); `proxy=True` reads a PROXY header first, as the listener does behind a
    balancer (mailflow.proxy_protocol.read_client, from a trusted peer), and the session gets the rest."""

    def __init__(self, proxy: bool = False, max_message_bytes: int = 64 * 1024):
        from mailflow_smtp_ingress.directory import CachedDirectory
        from mailflow_smtp_ingress.handler import IngressHandler
        from mailflow_smtp_ingress.server import SmtpServer
        from mailflow_smtp_ingress.settings import Settings
        from tests.support.doubles import MemoryQueue

        self.settings = Settings(
            service_token="fuzz",
            hostname="mx.example.test",
            auth_failure_delay=0.0,
            require_tls_for_auth=False,
            mx_auth=True,
            max_message_bytes=max_message_bytes,
            max_recipients=20,
            proxy_protocol=proxy,
            proxy_trusted="127.0.0.0/8" if proxy else "",
            max_auth_failures=1000,
            auth_failures_per_ip=10**9,
        )
        self.queue = MemoryQueue()
        directory = CachedDirectory(_Directory(), timeout=5.0)
        self.handler = IngressHandler(self.settings, directory, self.queue)
        self.server = SmtpServer(self.settings, self.handler, None)

    async def run(self, data: bytes) -> Dialogue:
        from mailflow_smtp_ingress.session import Session

        self.queue.messages.clear()
        peer = None
        if self.settings.proxy_protocol:
            peer, data = await self._proxy(data)
            if peer is None:  # the listener closes such a connection without a word
                return Dialogue(b"", True, [])
        session = Session(self.server, "mx", peer)
        conn = session.conn
        transport = FakeTransport(conn)
        conn.connection_made(transport)

        def idle() -> bool:
            return session.task.done() or (conn.waiter is not None and not conn.waiter.done())

        await _feed(data, conn.data_received, lambda: conn.closed, idle)
        if not conn.closed:
            conn.eof_received()
            await _settle(lambda: session.task.done())
        transport.close()
        await _settle(lambda: session.task.done())
        if not session.task.done():
            session.task.cancel()
            raise AssertionError("the SMTP session did not end after its connection was closed")
        return Dialogue(bytes(transport.output), conn.closed, list(self.queue.messages))

    async def _proxy(self, data: bytes) -> tuple[tuple[str, int] | None, bytes]:
        """The PROXY header off a socket as the listener reads it: (the client, what follows it)."""
        import socket

        from mailflow.proxy_protocol import ProxyError, read_client

        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            b.sendall(data)
            b.shutdown(socket.SHUT_WR)
            try:
                peer = await read_client(a, ("127.0.0.1", 40000), self.server.proxy_trusted, 0.5)
            except ProxyError:
                return None, b""
            rest = b""
            while chunk := await asyncio.get_running_loop().sock_recv(a, 65536):
                rest += chunk
            return peer, rest
        finally:
            a.close()
            b.close()


# --- POP3 ------------------------------------------------------------------------------------------------


class _Maildrop:
    """What a POP3 session asks of the store (mailflow.store.api.Mailboxes), for alice's INBOX of
    MESSAGES, in memory: login, the maildrop lock, the listing, bodies, and deletion at UPDATE."""

    def __init__(self) -> None:
        self.messages = dict(enumerate(MESSAGES, 1))  # uid -> body
        self.deleted: set[int] = set()
        self.lock: str | None = None

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        ok = username.strip().lower() == USER and password == PASSWORD
        return Principal(user_id=1, address=USER, addresses=(USER,), token="t") if ok else None

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        return set()

    async def pop3_lock(self, p: Principal) -> str:
        if self.lock is not None:
            raise Conflict("maildrop is locked by another session")
        self.lock = "lock"
        return self.lock

    async def pop3_unlock(self, p: Principal, token: str) -> None:
        if token == self.lock:
            self.lock = None

    async def select(
        self, p: Principal, name: str, claim_recent: bool = True, vanished_since: int | None = None
    ) -> Selected:
        uids = sorted(self.messages)
        flags = [frozenset({DELETED}) if u in self.deleted else frozenset() for u in uids]
        size = sum(map(len, self.messages.values()))
        status = MailboxStatus(1, "INBOX", 1, len(MESSAGES) + 1, len(uids), len(uids), 0, 1, size)
        return Selected(status, uids, flags, [1] * len(uids))

    async def fetch_meta(self, p: Principal, mailbox_id: int, uids: list[int]) -> list[MessageMeta]:
        return [MessageMeta(u, frozenset(), 1, len(self.messages[u])) for u in sorted(set(uids)) if u in self.messages]

    async def fetch_bodies(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        return {u: self.messages[u] for u in uids if u in self.messages}

    async def store_flags(self, p, mailbox_id, uids, op, flags, unchanged_since=None) -> StoreResult:
        if DELETED in flags and op == "add":
            self.deleted.update(u for u in uids if u in self.messages)
        return StoreResult([])

    async def expunge(self, p: Principal, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        gone = sorted(u for u in self.deleted if uids is None or u in uids)
        for u in gone:
            del self.messages[u]
        self.deleted -= set(gone)
        return gone


class Pop3Driver:
    """The POP3 session of imap-pop3 over a fresh `_Maildrop` per dialogue (alice, three messages)."""

    def __init__(self):
        from mailflow_imap_pop3.settings import Settings

        self.settings = Settings(service_token="fuzz", login_max_delay=0.0, pop3_max_bad_commands=1000)

    async def run(self, data: bytes) -> Dialogue:
        from mailflow_imap_pop3.app import Server
        from mailflow_imap_pop3.pop3.session import Pop3Protocol

        store = _Maildrop()
        ctx = Server(self.settings, store).ctx
        proto = Pop3Protocol(ctx, ("127.0.0.1", 40000), "pop3")
        transport = FakeTransport(proto)
        proto.connection_made(transport)
        session = proto.session

        def idle() -> bool:
            return session.finished or (session.task is None and session.waiter is None) or (
                session.waiter is not None and not session.waiter.done()
            )

        await _feed(data, proto.data_received, lambda: session.finished, idle)
        transport.close()
        await _settle(lambda: proto.done.done())
        if not proto.done.done():
            raise AssertionError("the POP3 session did not end after its connection was closed")
        if store.lock is not None:
            raise AssertionError("the maildrop lock outlived the session")
        return Dialogue(bytes(transport.output), session.finished)
