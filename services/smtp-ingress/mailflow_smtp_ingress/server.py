"""The listeners (MX, submission, implicit-TLS submission) and everything sessions share.

`start` binds every configured listener or raises (port in use); without a certificate SMTPS stays off.
Each listener accepts on its own socket; with PROXY_PROTOCOL on, the header is read from the socket
first (mailflow.proxy_protocol: only from PROXY_TRUSTED networks; none configured fails at startup),
then the session's connection (TLS first, on SMTPS) takes over. `admit` counts the client (after
PROXY) against the connection caps.
`drain` is the SIGTERM path: stop accepting, answer 421 to sessions waiting between transactions,
let sessions inside a transaction finish it (they get 421 right after their reply), and after
`drain_timeout` close whatever is left with 421. A session never outlives `drain`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time

from mailflow.connections import ConnectionLimiter, Slot, accept
from mailflow.hostport import split_hostport
from mailflow.proxy_protocol import ProxyError, ProxyUntrusted, read_client, trusted_networks
from mailflow_smtp_ingress import metrics
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
        self.proxy_trusted = trusted_networks(settings.proxy_trusted) if settings.proxy_protocol else None
        self.buffer_limit = settings.max_message_bytes + (1 << 20)
        self.sessions: set[Session] = set()
        self.sockets: dict[Listener, socket.socket] = {}
        self.servers: list[asyncio.Server] = []  # without PROXY, the loop accepts
        self.accepting: set[asyncio.Task] = set()  # accept loops and connections being set up
        self.draining = False
        self._active = {name: metrics.SESSIONS_ACTIVE.labels(name) for name in metrics.LISTENERS}
        self._opened = {name: metrics.SESSIONS.labels(name) for name in metrics.LISTENERS}
        self._empty = asyncio.Event()
        self._empty.set()

    # --- listeners -------------------------------------------------------------------------------------------

    async def start(self) -> SmtpServer:
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
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.create_server((host, port), family=family, backlog=s.backlog)
                sock.setblocking(False)
                self.sockets[name] = sock
                if self.proxy_trusted is None:  # the loop accepts (uvloop: in C), TLS first on SMTPS
                    smtps = name == "smtps"
                    self.servers.append(
                        await asyncio.get_running_loop().create_server(
                            lambda name=name: Session(self, name).conn,
                            sock=sock,
                            ssl=self.tls_context if smtps else None,
                            ssl_handshake_timeout=s.tls_handshake_timeout if smtps else None,
                            backlog=s.backlog,
                        )
                    )
                else:  # PROXY: we accept, to read the header before any transport (or TLS) exists
                    self._track(asyncio.create_task(accept(sock, functools.partial(self._take, name))))
        except BaseException:
            self.close_listeners()
            raise
        log.info("listening", extra={name: self.port(name) for name in self.sockets})
        return self

    def port(self, listener: Listener) -> int:
        return self.sockets[listener].getsockname()[1]

    def close_listeners(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.accepting):
            task.cancel()
        for sock in self.sockets.values():
            sock.close()

    def _track(self, task: asyncio.Task) -> None:
        self.accepting.add(task)
        task.add_done_callback(self.accepting.discard)

    def _take(self, name: Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
        self._track(asyncio.create_task(self._proxied(name, conn, peer)))

    async def _proxied(self, name: Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
        """PROXY protocol: the trust rule and the header (mailflow.proxy_protocol); a peer outside
        `proxy_trusted`, a missing or bad header, or silence past `proxy_timeout` closes the
        connection without a word. The header's address is the client's from then on."""
        try:
            client = await read_client(conn, peer, self.proxy_trusted, self.settings.proxy_timeout)
        except asyncio.CancelledError:  # the drain
            conn.close()
            raise
        except ProxyUntrusted:
            metrics.REJECTED.labels("connect", "proxy_untrusted").inc()
            log.warning("PROXY header from an untrusted peer refused", extra={"peer": peer[0]})
        except (ProxyError, OSError) as exc:
            metrics.REJECTED.labels("connect", "proxy_invalid").inc()
            log.info("bad or missing PROXY header: %s", exc, extra={"peer": peer[0]})
        else:
            return await self._connect(name, conn, client)
        conn.close()

    async def _connect(self, name: Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
        smtps = name == "smtps"
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: Session(self, name, peer).conn,
                conn,
                ssl=self.tls_context if smtps else None,
                ssl_handshake_timeout=self.settings.tls_handshake_timeout if smtps else None,
            )
        except asyncio.CancelledError:  # the drain, during a TLS handshake
            conn.close()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            if smtps:
                metrics.TLS.labels("failed").inc()
            log.info("connection setup failed: %s", exc or type(exc).__name__, extra={"peer": peer[0]})
            conn.close()

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
        if session.slot is not None:
            self.limiter.release(session.slot)
            session.slot = None
        if not self.sessions:
            self._empty.set()

    def admit(self, session: Session) -> R.Reply | None:
        """Count the connection against the per-address and total limits (after PROXY); at the total
        cap the oldest evictable session (Session.evict) makes room."""
        slot = Slot(session.client.ip)
        refusal = self.limiter.acquire(slot)
        if refusal is None:
            slot.evict = session.evict
            session.slot = slot
            return None
        reason = "per_ip_limit" if refusal == "per_ip" else "server_busy"
        metrics.REJECTED.labels("connect", reason).inc()
        log.info("connection refused: %s", reason)
        return R.R421_TOO_MANY_CONNECTIONS if refusal == "per_ip" else R.R421_SERVER_BUSY

    # --- shutdown ---------------------------------------------------------------------------------------------

    async def drain(self, within: float | None = None) -> None:
        """Stop accepting; let open transactions finish `within` seconds; then close everything."""
        timeout = self.settings.drain_timeout if within is None else within
        self.draining = True
        self.close_listeners()
        open_tx = 0
        for session in list(self.sessions):
            if not session.in_transaction and session.conn.waiting:
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
                    session.conn.abort()
        log.info("drained", extra={"seconds": round(time.monotonic() - started, 3)})
