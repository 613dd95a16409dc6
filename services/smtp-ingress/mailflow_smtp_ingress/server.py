"""The listeners (MX, submission, implicit-TLS submission) and everything sessions share.

`start` binds every configured listener or raises (port in use, no certificate for SMTPS).
`drain` is the SIGTERM path: stop accepting, answer 421 to sessions waiting between transactions,
let sessions inside a transaction finish it (they get 421 right after their reply), and after
`drain_timeout` close whatever is left with 421. A session never outlives `drain`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from mailflow.connections import ConnectionLimiter
from mailflow.hostport import split_hostport
from mailflow_smtp_ingress import metrics, proxy
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.session import Session
from mailflow_smtp_ingress.settings import Settings
from mailflow_smtp_ingress.state import Listener

log = logging.getLogger(__name__)


class SmtpServer:
    def __init__(self, settings: Settings, handler: IngressHandler, tls_context: ssl.SSLContext | None):
        self.settings = settings
        self.handler = handler
        self.tls_context = tls_context
        self.limiter = ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
        self.proxy_trusted = proxy.trusted_networks(settings.proxy_trusted)
        self.buffer_limit = settings.max_message_bytes + (1 << 20)
        self.sessions: set[Session] = set()
        self.servers: dict[Listener, asyncio.base_events.Server] = {}
        self.draining = False
        self._active = {name: metrics.SESSIONS_ACTIVE.labels(name) for name in metrics.LISTENERS}
        self._opened = {name: metrics.SESSIONS.labels(name) for name in metrics.LISTENERS}
        self._empty = asyncio.Event()
        self._empty.set()

    # --- listeners -------------------------------------------------------------------------------------------

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        s = self.settings
        wanted: list[tuple[Listener, str]] = [
            ("mx", s.listen),
            ("submission", s.submission_listen),
            ("smtps", s.smtps_listen),
        ]
        try:
            for name, listen in wanted:
                if not listen:
                    continue
                if name == "smtps" and self.tls_context is None:
                    log.warning("no TLS certificate: the SMTPS listener stays off")
                    continue
                host, port = split_hostport(listen)
                self.servers[name] = await loop.create_server(
                    lambda name=name: Session(self, name),
                    host,
                    port,
                    ssl=self.tls_context if name == "smtps" else None,
                    ssl_handshake_timeout=s.tls_handshake_timeout if name == "smtps" else None,
                    backlog=s.backlog,
                    reuse_address=True,
                )
        except BaseException:
            self.close_listeners()
            raise
        log.info("listening", extra={name: self.port(name) for name in self.servers})
        return self

    def port(self, listener: Listener) -> int:
        return self.servers[listener].sockets[0].getsockname()[1]

    def close_listeners(self) -> None:
        for srv in self.servers.values():
            srv.close()

    # --- sessions ----------------------------------------------------------------------------------------------

    def session_started(self, session: Session) -> None:
        self.sessions.add(session)
        self._empty.clear()
        self._opened[session.listener].inc()
        self._active[session.listener].inc()

    def session_ended(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self._active[session.listener].dec()
        if session.counted_ip is not None:
            self.limiter.release(session.counted_ip)
            session.counted_ip = None
        if not self.sessions:
            self._empty.set()

    def admit(self, session: Session) -> R.Reply | None:
        """Count the connection against the per-address and total limits (after PROXY)."""
        refusal = self.limiter.acquire(session.client.ip)
        if refusal is None:
            session.counted_ip = session.client.ip
            return None
        reason = "per_ip_limit" if refusal == "per_ip" else "server_busy"
        metrics.REJECTED.labels("connect", reason).inc()
        log.info("connection refused: %s", reason)
        return R.R421_TOO_MANY_CONNECTIONS if refusal == "per_ip" else R.R421_SERVER_BUSY

    async def read_proxy(self, session: Session) -> bool:
        return await proxy.read_proxy(session, self.proxy_trusted, self.settings.proxy_timeout)

    # --- shutdown ---------------------------------------------------------------------------------------------

    async def drain(self, within: float | None = None) -> None:
        """Stop accepting; let open transactions finish `within` seconds; then close everything."""
        timeout = self.settings.drain_timeout if within is None else within
        self.draining = True
        self.close_listeners()
        open_tx = 0
        for session in list(self.sessions):
            if session.tx is None and session.waiter is not None:
                session.close(R.R421_SHUTTING_DOWN)
            else:
                open_tx += 1
        log.info("draining", extra={"sessions": len(self.sessions), "in_transaction": open_tx})
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            left = list(self.sessions)
            log.warning("drain deadline passed: closing %d sessions", len(left))
            for session in left:
                session.close(R.R421_SHUTTING_DOWN)
            try:
                await asyncio.wait_for(self._empty.wait(), 2.0)
            except TimeoutError:
                for session in list(self.sessions):
                    if session.transport is not None:
                        session.transport.abort()
        for srv in self.servers.values():
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except Exception:
                pass
        log.info("drained", extra={"seconds": round(time.monotonic() - started, 3)})
