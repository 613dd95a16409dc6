"""Test helpers for imap-pop3: the real server on 127.0.0.1 (port 0) over a store (the real one), in a
thread of its own so blocking clients (imaplib, poplib, real programs) can talk to it; a raw line client."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import ssl
import threading
from email.message import EmailMessage
from pathlib import Path

from mailflow import tls
from mailflow.store.api import DeliverItem
from mailflow_imap_pop3.app import Server
from mailflow_imap_pop3.settings import Settings
from tests.support.store import TestStore

_keys = itertools.count(1)


def tls_pair(directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    tls.ensure_self_signed(cert, key, "localhost")
    return str(cert), str(key)


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_message(
    subject: str = "Hello", body: str = "Hi there.\n", to: str = "alice@example.test", **headers
) -> bytes:
    msg = EmailMessage()
    msg["From"] = headers.pop("from_", "Carol <carol@elsewhere.test>")
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = headers.pop("date", "Fri, 27 Nov 2026 10:00:00 +0000")
    msg["Message-ID"] = f"<m{next(_keys)}@elsewhere.test>"
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def new_loop() -> asyncio.AbstractEventLoop:
    """The loop the service runs on in production (uvloop), so tests see the same transports."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Running:
    """A Server in its own thread and event loop. `call(coro)` runs a coroutine there."""

    def __init__(
        self, settings: Settings, store, with_tls: bool = True, nats_url: str | None = None, nats_login: dict | None = None
    ):
        """`nats_login`: imap-pop3's NATS user and password on a server that asks (Stack.nats_login)."""
        self.settings, self.store = settings, store
        self.nats_url, self.nats_login = nats_url, nats_login or {}
        self.nc = None
        self.loop = new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        ctx = None
        if with_tls and settings.tls_cert:
            ctx = tls.server_context(settings.tls_cert, settings.tls_key)
        self.server: Server = self.call(self._start(ctx))
        self.listener = None
        if isinstance(store, TestStore):  # the store's events, as NATS would bring them to the hub
            hub, loop = self.server.ctx.hub, self.loop
            self.listener = lambda event: loop.call_soon_threadsafe(hub.dispatch, event)
            store.listeners.append(self.listener)

    async def _start(self, ctx) -> Server:
        if self.nats_url:
            from mailflow import natsconn

            self.nc = await natsconn.connect(self.nats_url, "imap-pop3", **self.nats_login)
        return await Server(self.settings, self.store, self.nc, ctx).start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, name: str = "imap") -> int:
        return self.server.port(name)

    def deliver(self, rcpt: str, raw: bytes, mailbox: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
        item = DeliverItem(key=f"k{next(_keys)}", recipient=rcpt, body=raw, mailbox=mailbox, flags=flags)
        res = self.call(self.store.deliver([item]))
        assert res[0].status == "stored", res

    def stop(self, grace: float = 2.0) -> None:
        if self.listener is not None and self.listener in self.store.listeners:
            self.store.listeners.remove(self.listener)
        try:
            self.call(self.server.drain(grace))
            if self.nc is not None:
                from mailflow import natsconn

                self.call(natsconn.close(self.nc))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def settings_for(tmp: Path, **overrides) -> Settings:
    cert, key = tls_pair(tmp)
    base = dict(
        service_token="test-token",
        listen="127.0.0.1:0",
        imaps_listen="127.0.0.1:0",
        pop3_listen="127.0.0.1:0",
        pop3s_listen="127.0.0.1:0",
        managesieve_listen="127.0.0.1:0",
        tls_cert=cert,
        tls_key=key,
        login_max_delay=0.0,
    )
    base.update(overrides)
    return Settings(**base)


class Raw:
    """A person at a terminal: send a line, read lines back; literals in replies are inlined."""

    def __init__(self, host: str, port: int, timeout: float = 10, context: ssl.SSLContext | None = None):
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(sock) if context else sock
        self.buf = b""

    def send(self, text: str | bytes) -> None:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def line(self) -> bytes:
        """One response line (CRLF dropped); a literal {n} and its data are kept inline."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def until(self, tag: str) -> list[bytes]:
        """Lines up to and including the tagged reply of `tag`."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag.encode() + b" "):
                return lines

    def cmd(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}")
        return self.until(tag)

    def closed(self) -> bool:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()
