"""What IMAP's and ManageSieve's sessions share (both read commands of lines and literals through a
framer, one connection each): reading under the input deadline, the autologout, eviction when the
service is full, the count of bad commands in a row, and the bookkeeping of a login.

A subclass sets `conn`, `ctx`, `framer`, `state`, `principal` and `id` in its __init__ (then calls
`StreamSession.__init__`), makes `timer` when it runs, and says how a BYE is written (`bye_line`), what
its states are called (`NOT_AUTH`, `LOGOUT`) and its eviction notice (`BYE_EVICTED`). POP3 is a protocol
object on a transport, not a reading loop, and has its own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mailflow import log as mlog
from mailflow import scram_auth
from mailflow.connections import InputDeadline
from mailflow.store.api import Principal
from mailflow_imap_pop3 import metrics

log = logging.getLogger(__name__)


class StreamSession:
    NOT_AUTH: Any  # the subclass's State members
    LOGOUT: Any
    BYE_EVICTED: bytes
    protocol: str  # for the login log line

    conn: Any
    ctx: Any
    framer: Any
    state: Any
    principal: Principal | None
    id: str
    timer: InputDeadline

    def __init__(self) -> None:
        self.bad_in_a_row = 0
        self.busy = False
        self.reading = False  # a command (AUTHENTICATE) waits for the client: the deadline runs
        self.stopping = False
        self.bye = ""
        self.started = time.monotonic()

    def bye_line(self, text: str) -> bytes:
        raise NotImplementedError

    async def receive(self) -> bytes:
        """The client's next bytes (b"" at EOF); IMAP waits with NOTIFY's news in between."""
        return await self.conn.read()

    async def read_more(self) -> bool:
        """Read from the client into the framer; False at EOF or on the autologout timer."""
        await self.conn.flush()
        if self.stopping or self.state == self.LOGOUT:
            return False
        self.reading = True
        try:
            data = await self.receive()
        except (ConnectionError, OSError):
            return False
        finally:
            self.reading = False
        if not data:
            return False
        self.timer.received(len(data))
        self.framer.feed(data)
        return True

    def _autologout(self) -> None:
        log.info("input deadline passed", extra={"peer": self.conn.ip, "session": self.id})
        self.conn.send_now(self.bye_line("Autologout; idle for too long"))
        self.conn.close()

    def evict(self) -> bool:
        """The service is full: end this session if it has not logged in and waits for the client."""
        if self.state != self.NOT_AUTH or (self.busy and not self.reading) or self.stopping:
            return False
        log.info("evicted: the service is full", extra={"peer": self.conn.ip, "session": self.id})
        metrics.EVICTED.labels(self.conn.listener).inc()
        self.stopping = True
        self.conn.send_now(self.BYE_EVICTED)
        self.conn.close()
        return True

    def _count_bad(self) -> bool:
        """One more bad command in a row; True (and BYE) when that is too many."""
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.ctx.settings.max_bad_commands:
            self.write(self.bye_line("Too many invalid commands"))
            return True
        return False

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    @property
    def tls_active(self) -> bool:
        return self.conn.tls is not None

    def plaintext_allowed(self) -> bool:
        """May a password cross this connection: TLS, loopback, or the settings allow it."""
        return self.tls_active or self.conn.loopback or self.ctx.settings.allow_plaintext_auth

    def mechanisms(self) -> list[str]:
        """The SASL mechanisms: PLAIN and SCRAM-SHA-256, and -PLUS where TLS can bind it."""
        return ["PLAIN", *scram_auth.mechanisms(self.conn.channel_bindings())]

    def authenticated(self, principal: Principal, idle_timeout: float) -> None:
        """What a login changes on the connection: the principal, the slot no longer evictable, the input
        deadline of a logged-in session, the log's session; the subclass sets its state and limits."""
        self.principal = principal
        self.conn.authenticated()
        self.timer.authenticated(idle_timeout)
        if self.conn.slot is not None:
            self.conn.slot.evict = None
        mlog.session_var.set(self.id)
        log.info("login", extra={"user": principal.address, "peer": self.conn.ip, "tls": bool(self.conn.tls),
                                 "protocol": self.protocol})  # fmt: skip
