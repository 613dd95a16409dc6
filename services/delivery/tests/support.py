"""Remote MTAs for delivery's tests: a real aiosmtpd server with STARTTLS, a scripted one, and
Mailflow's own smtp-ingress as a provider's relay (submission with STARTTLS and AUTH, and SMTPS)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import dkim as dkimpy
from aiosmtpd.controller import Controller

from mailflow import tls
from mailflow.contracts.messages import MxHost, MxReply
from mailflow.errors import ServiceUnavailable
from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.server import SmtpServer
from mailflow_smtp_ingress.settings import Settings as IngressSettings
from tests.support import free_port
from tests.support.doubles import MemoryQueue, SwitchableDirectory
from tests.support.store import TestStore


class LoopbackMx:
    """A resolver for which every domain's MX is mx.<domain> on 127.0.0.1."""

    async def lookup(self, domain: str) -> MxReply:
        return MxReply(domain=domain, status="ok", hosts=[MxHost(preference=10, host="mx." + domain, addresses=["127.0.0.1"])])


class KeylessStore(TestStore):
    """The store, but unable to give a DKIM key set (it is away)."""

    async def dkim_signing_key(self, domain):
        raise ServiceUnavailable("store down")


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    tls: bool
    mail_options: list[str]


class Handler:
    """Recipients starting with "unknown" get 550 5.1.1, with "busy" 451 4.2.1, with "full" 552."""

    def __init__(self) -> None:
        self.messages: list[Received] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("unknown"):
            return "550 5.1.1 no such user"
        if local.startswith("busy"):
            return "451 4.2.1 try later"
        if local.startswith("full"):
            return "552 5.2.2 mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, session.ssl is not None, list(envelope.mail_options))
        )
        return "250 2.0.0 Ok: queued as REMOTE1"


class RemoteMta:
    """aiosmtpd on 127.0.0.1 (or another loopback address), STARTTLS with a self-signed pair."""

    def __init__(self, tmp_path, host: str = "127.0.0.1", starttls: bool = True, port: int | None = None):
        self.cert, key = tmp_path / "remote-cert.pem", tmp_path / "remote-key.pem"
        cert = self.cert
        tls.ensure_self_signed(cert, key, "mx.remote.test")
        self.handler = Handler()
        self.port = port or free_port(host)
        ctx = tls.server_context(str(cert), str(key)) if starttls else None
        self.controller = Controller(
            self.handler,
            hostname=host,
            port=self.port,
            server_hostname="mx.remote.test",
            tls_context=ctx,
            require_starttls=False,
            data_size_limit=1024 * 1024,
            enable_SMTPUTF8=True,
        )

    def __enter__(self) -> RemoteMta:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


@dataclass
class Scripted:
    """A raw SMTP server answering from a table: command prefix -> reply (None: no answer). Records
    what it read."""

    replies: dict[str, str | None]
    greeting: str = "220 scripted ESMTP"
    ehlo: tuple[str, ...] = ("250-scripted", "250-PIPELINING", "250 SIZE 100000")
    drop_after_data: bool = False
    dot_delay: float = 0.0  # seconds before answering the final dot (a slow remote)
    lines: list[bytes] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)  # raw chunks, to see pipelining
    port: int = 0

    async def start(self, host: str = "127.0.0.1") -> Scripted:
        self.server = await asyncio.start_server(self._session, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(self.greeting.encode() + b"\r\n")
        in_data = False
        buf = b""
        try:
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    return
                self.reads.append(chunk)
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    self.lines.append(line)
                    if in_data:
                        if line == b".":
                            in_data = False
                            if self.drop_after_data:
                                w.close()
                                return
                            if self.dot_delay:
                                await asyncio.sleep(self.dot_delay)
                            w.write(self.replies.get("DOT", "250 2.0.0 ok").encode() + b"\r\n")
                        continue
                    cmd = line.decode().upper()
                    if cmd.startswith("EHLO"):
                        w.write(("\r\n".join(self.ehlo) + "\r\n").encode())
                    elif cmd.startswith("QUIT"):
                        w.write(b"221 bye\r\n")
                        await w.drain()
                        w.close()
                        return
                    else:
                        reply = next((v for k, v in self.replies.items() if cmd.startswith(k)), "250 2.0.0 ok")
                        if reply is None:  # a remote that hangs: no answer at all
                            continue
                        w.write(reply.encode() + b"\r\n")
                        if cmd.startswith("DATA") and reply.startswith("354"):
                            in_data = True
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            return


class Relay:
    """A provider's relay: Mailflow's smtp-ingress on `host`, submission (STARTTLS, then AUTH: the
    users of `store`, its own mailbox-store, behind a switch: `directory.down`) and SMTPS, with a
    certificate for `name` (a CA of its own: `cert` is the file a client verifies it with). What it
    accepted is in `messages`."""

    def __init__(self, tmp_path, store: TestStore, host: str = "127.0.0.5", name: str = "smtp.relay.test"):
        self.cert, self.key = tmp_path / "relay-cert.pem", tmp_path / "relay-key.pem"
        tls.ensure_self_signed(self.cert, self.key, name)
        self.host, self.directory, self.queue = host, SwitchableDirectory(store), MemoryQueue()
        self.settings = IngressSettings(
            service_token="relay-token",
            hostname=name,
            listen="",
            submission_listen=f"{host}:0",
            smtps_listen=f"{host}:0",
            http_listen=f"{host}:0",
            tls_cert=str(self.cert),
            tls_key=str(self.key),
            auth_failure_delay=0.0,
            nats_url="nats://127.0.0.1:1",
        )

    async def __aenter__(self) -> Relay:
        handler = IngressHandler(self.settings, CachedDirectory(self.directory, ttl=30, negative_ttl=0, timeout=5), self.queue)
        ctx = tls.server_context(str(self.cert), str(self.key))
        self.server = await SmtpServer(self.settings, handler, ctx).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.drain(0.5)

    def port(self, listener: str = "submission") -> int:
        return self.server.port(listener)

    @property
    def messages(self):
        """(QueuedMessage, raw bytes) for each message the relay took."""
        return self.queue.messages


def dkim_verdicts(data: bytes, dns: dict) -> list[tuple[bytes, bool]]:
    """dkimpy's verdict on each signature, top first (a body hash mismatch is False, not an exception)."""
    d = dkimpy.DKIM(data)
    sigs = [dkimpy.util.parse_tag_value(v) for n, v in d.headers if n.lower() == b"dkim-signature"]
    out = []
    for i, s in enumerate(sigs):
        try:
            ok = d.verify(idx=i, dnsfunc=lambda name, timeout=5: dns.get(name))
        except dkimpy.ValidationError:
            ok = False
        out.append((s[b"a"], ok))
    return out
