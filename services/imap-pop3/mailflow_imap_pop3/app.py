"""Wiring: the store client, NATS (push, revocations), the five listeners (IMAP, IMAPS, POP3, POP3S,
ManageSieve), the HTTP side, and the drain on SIGTERM.

`Server` runs the listeners over any `Mailboxes` (tests hand it the real store in-process); `run` builds the real
parts from Settings and serves until `stop` is set. The drain (issue 7): stop accepting, send `* BYE`
to every IMAP client that waits (IDLE included) and close idle POP3 sessions, let running commands
finish for up to `drain_timeout`, cut what is left, then drain NATS. A listener whose address is
taken makes startup fail loudly; no TLS pair configured means no STARTTLS/STLS and no 993/995.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from mailflow import natsconn
from mailflow import tls as mtls
from mailflow.connections import ConnectionLimiter, Slot
from mailflow.lifecycle import Stopper
from mailflow.proxy_protocol import trusted_networks
from mailflow.store.api import Mailboxes
from mailflow.throttle import LoginThrottle
from mailflow.web import HttpServer, service_app
from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.auth import AuthCache, Authenticator
from mailflow_imap_pop3.context import Context
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.session import Session
from mailflow_imap_pop3.listener import Connection, Listener
from mailflow_imap_pop3.managesieve import responses as sieve_rsp
from mailflow_imap_pop3.managesieve.session import Session as SieveSession
from mailflow_imap_pop3.pop3 import replies as pop3_replies
from mailflow_imap_pop3.pop3.session import Pop3Protocol
from mailflow_imap_pop3.push import Hub
from mailflow_imap_pop3.revoke import Revoker
from mailflow_imap_pop3.settings import Settings

log = logging.getLogger(__name__)

_IMAP_REFUSALS = {"per_ip": rsp.BYE_TOO_MANY_CONNECTIONS, "total": rsp.BYE_SERVER_BUSY}
_POP3_REFUSALS = {"per_ip": pop3_replies.R_TOO_MANY_CONNECTIONS, "total": pop3_replies.R_SERVER_BUSY}
_SIEVE_REFUSALS = {"per_ip": sieve_rsp.BYE_TOO_MANY_CONNECTIONS, "total": sieve_rsp.BYE_SERVER_BUSY}


def certificates(settings: Settings) -> mtls.Certificates | None:
    if not (settings.tls_cert and settings.tls_key):
        return None
    return mtls.Certificates(settings.tls_cert, settings.tls_key, expiry=metrics.TLS_CERT_EXPIRY)


class Server:
    def __init__(self, settings: Settings, store: Mailboxes, nc=None, tls: ssl.SSLContext | None = None):
        self.settings = settings
        throttle = LoginThrottle(
            settings.login_failures_max,
            settings.login_failure_window,
            free=settings.login_failures_free,
            max_delay=settings.login_max_delay,
        )
        auth = Authenticator(
            store,
            throttle,
            AuthCache(settings.auth_cache_ttl, settings.auth_cache_size),
            settings.default_domain,
        )
        self.ctx = Context(settings, store, auth, Hub(nc), tls)
        self.revoker = Revoker(self.ctx, nc, settings.revocation_check)
        self.limiter = ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
        self.listeners: dict[str, Listener] = {}

    async def _imap(self, conn: Connection) -> None:
        await Session(conn, self.ctx).run()

    async def _managesieve(self, conn: Connection) -> None:
        await SieveSession(conn, self.ctx).run()

    def _pop3(self, peer: tuple, listener: str, slot: Slot) -> Pop3Protocol:
        return Pop3Protocol(self.ctx, peer, listener, slot)

    async def start(self) -> Server:
        s = self.settings
        proxy = trusted_networks(s.proxy_trusted) if s.proxy_protocol else None
        plan = [
            ("imap", s.listen, self._imap, None),
            ("imaps", s.imaps_listen, self._imap, self.ctx.tls),
            ("pop3", s.pop3_listen, None, None),
            ("pop3s", s.pop3s_listen, None, self.ctx.tls),
            ("managesieve", s.managesieve_listen, self._managesieve, None),
        ]
        try:
            for name, listen, handler, implicit in plan:
                if not listen:
                    continue
                if name in ("imaps", "pop3s") and implicit is None:
                    log.warning("%s listener not started: no TLS certificate configured", name)
                    continue
                pop3 = name.startswith("pop3")
                refusals = _POP3_REFUSALS if pop3 else _SIEVE_REFUSALS if name == "managesieve" else _IMAP_REFUSALS
                self.listeners[name] = await Listener(
                    name, listen, handler, implicit, proxy, s.proxy_timeout, s.tls_handshake_timeout,
                    self._pop3 if pop3 else None, self.limiter, refusals,
                ).start()  # fmt: skip
        except BaseException:
            for listener in self.listeners.values():
                listener.stop_accepting()
            raise
        await self.revoker.start()
        return self

    def port(self, name: str) -> int:
        return self.listeners[name].port

    async def drain(self, grace: float | None = None) -> None:
        grace = self.settings.drain_timeout if grace is None else grace
        for listener in self.listeners.values():
            listener.stop_accepting()
        self.ctx.stopping = True
        await self.revoker.close()
        sessions = list(self.ctx.sessions)
        for session in sessions:
            session.shutdown()
        tasks = [t for listener in self.listeners.values() for t in listener.tasks]
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=grace)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=5)
            tasks = list(left)
        log.info("drained", extra={"sessions": len(sessions), "cut": len(tasks)})


async def run(settings: Settings, stop: asyncio.Event | None = None, store: Mailboxes | None = None) -> None:
    stop = stop or Stopper().install()
    own_store = store is None
    if store is None:
        from mailflow.store.client import StoreClient

        store = StoreClient(
            settings.store_url, settings.service_token.get_secret_value(), timeout=settings.store_timeout
        )
    nc = await natsconn.connect(settings.nats_url, "imap-pop3", **settings.nats_login())
    certs = certificates(settings)
    server = await Server(settings, store, nc, certs.context if certs else None).start()
    reload = None
    if certs is not None and settings.tls_reload_s:
        reload = asyncio.create_task(certs.watch(settings.tls_reload_s))

    async def nats_ready() -> bool:
        return nc.is_connected

    async def serving() -> bool:
        return not server.ctx.stopping

    http = await HttpServer(
        service_app("imap-pop3", {"nats": nats_ready, "listeners": serving}), settings.http_listen
    ).start()
    log.info(
        "imap-pop3 ready",
        extra={"listeners": {n: lst.listen for n, lst in server.listeners.items()}, "http": http.port},
    )
    try:
        await stop.wait()
    finally:
        if reload is not None:
            reload.cancel()
        await server.drain()
        await server.ctx.hub.close()
        await http.stop()
        await natsconn.close(nc)
        if own_store:
            await store.close()
