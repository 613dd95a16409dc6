"""Fixtures for smtp-ingress tests: the real SMTP server on 127.0.0.1 port 0, run by its own event loop
in a thread (so tests can use blocking smtplib and raw sockets), with the real mailbox-store as its
directory (tests/support/store.py, behind a switch that can make it fail) and an in-memory queue behind
it; and a raw line client for transcripts. With `dns=` (a DnsServer the test started) the server runs the
sender authentication checks (checks.py) over the resolver service's own lookup code (QueryResolver)
asking that DNS server."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
from collections.abc import Callable

import pytest
import uvloop

from mailflow import tls
from mailflow_resolver.lookup import QueryResolver, make_dns_resolver
from mailflow_smtp_ingress.checks import Checks
from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.rspamd import SpamFilter
from mailflow_smtp_ingress.server import SmtpServer
from mailflow_smtp_ingress.settings import Settings
from tests.support.dns import DnsServer
from tests.support.doubles import MemoryQueue, SwitchableDirectory
from tests.support.store import TestStore

USERS = (
    ("alice@example.test", "alice-pw"),
    ("bob@example.test", "bob-pw"),
    ("user%other@example.test", "x"),  # a real mailbox with a '%' must still not become a relay
)


@pytest.fixture
def store(local_store) -> TestStore:
    """The real mailbox-store, emptied, with USERS, the alias sales@example.test -> alice and a second
    local domain other.example.test."""
    s = local_store.fresh(*USERS)
    s.add_alias("sales@example.test", ["alice@example.test"])
    s.add_domain("other.example.test")
    return s


@pytest.fixture
def directory(store) -> SwitchableDirectory:
    return SwitchableDirectory(store)


class ServerThread:
    """SmtpServer in a thread with its own (uv)loop. `call(coro)` runs a coroutine there."""

    def __init__(
        self,
        settings: Settings,
        directory: SwitchableDirectory,
        tls_context: ssl.SSLContext | None,
        dns: DnsServer | None = None,
    ):
        self.settings = settings
        self.dns = dns
        self.directory = directory
        self.queue = MemoryQueue()
        self.tls_context = tls_context
        self.loop = uvloop.new_event_loop()  # what production runs
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: SmtpServer | None = None
        self.spam: SpamFilter | None = None

    def start(self) -> ServerThread:
        self.thread.start()

        async def boot() -> SmtpServer:
            cached = CachedDirectory(
                self.directory, ttl=30, negative_ttl=0, timeout=self.settings.directory_timeout
            )
            checks = None
            if self.dns is not None:  # short DNS timeouts: a dropped question is a temp_fail in 0.5 s
                lookup = QueryResolver(make_dns_resolver(self.dns.address, timeout=0.2, lifetime=0.5))
                checks = Checks.over(self.settings, lookup)
            self.spam = SpamFilter(self.settings) if self.settings.rspamd_url else None
            handler = IngressHandler(self.settings, cached, self.queue, checks=checks, spam=self.spam)
            return await SmtpServer(self.settings, handler, self.tls_context).start()

        self.server = self.call(boot())
        return self

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, listener: str = "mx") -> int:
        return self.server.port(listener)

    @property
    def messages(self):
        return self.queue.messages

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.drain(0.5))
        if self.spam is not None:
            self.call(self.spam.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    tls.ensure_self_signed(cert, key, "mx.example.test")
    return str(cert), str(key)


def settings_for(tls_files, **overrides) -> Settings:
    cert, key = tls_files
    values = dict(
        service_token="test-token",
        hostname="mx.example.test",
        listen="127.0.0.1:0",
        submission_listen="127.0.0.1:0",
        smtps_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        tls_cert=cert,
        tls_key=key,
        auth_failure_delay=0.0,
        nats_url="nats://127.0.0.1:1",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_server(tls_files, directory) -> Callable[..., ServerThread]:
    """make_server(dns=None, **settings) -> a running ServerThread over the `directory` fixture (with the
    authentication checks over `dns`, a DnsServer, if given); stopped after the test."""
    started: list[ServerThread] = []

    def make(dns: DnsServer | None = None, **overrides) -> ServerThread:
        settings = settings_for(tls_files, **overrides)
        ctx = tls.server_context(settings.tls_cert, settings.tls_key)
        st = ServerThread(settings, directory, ctx, dns).start()
        started.append(st)
        return st

    yield make
    for st in started:
        st.stop()


@pytest.fixture
def srv(make_server) -> ServerThread:
    return make_server()


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    return tls.client_context(verify=False)


class Raw:
    """A line client for transcripts: `c.send("MAIL FROM:<a@b>")`, `c.expect("250 2.1.0")`."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, greet: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if greet:
            self.expect("220 ")

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One whole reply (all lines of a multi-line one), as text joined by newlines."""
        lines = []
        while True:
            line = self.line().decode("utf-8", "replace")
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def expect(self, prefix: str) -> str:
        r = self.reply()
        last = r.split("\n")[-1]
        assert last.startswith(prefix), f"expected {prefix!r}, got {r!r}"
        return r

    def cmd(self, line: str, prefix: str) -> str:
        self.send(line)
        return self.expect(prefix)

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection (everything before that is read and dropped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")


@pytest.fixture
def raw(srv) -> Callable[..., Raw]:
    """raw(listener="mx", server=None, **Raw kwargs) -> a connected Raw client (closed after the test)."""
    opened: list[Raw] = []

    def connect(listener: str = "mx", server: ServerThread | None = None, **kw) -> Raw:
        c = Raw((server or srv).port(listener), **kw)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()


@pytest.fixture
def settings_factory(tls_files) -> Callable[..., Settings]:
    """settings_factory(**overrides) -> Settings for a test run (all listeners on port 0)."""
    return lambda **overrides: settings_for(tls_files, **overrides)
