"""One ManageSieve connection (RFC 5804): states, the command table, the read-parse-run loop, `to_reply`.

States: NOT_AUTH (CAPABILITY, STARTTLS, AUTHENTICATE, NOOP, LOGOUT), AUTH (every command but STARTTLS
and AUTHENTICATE), LOGOUT. A command in the wrong state, an unknown one, or one that cannot be read is
answered NO (ManageSieve has no BAD); after `max_bad_commands` of those in a row the session says BYE.
Input is bounded as IMAP's is: before authentication lines and literals are at most the preauth limits,
after it `max_line_bytes` and `managesieve_max_script_bytes`; a literal over the limit is fatal (BYE,
closed: the client sends it anyway). The autologout timer is mailflow.connections.InputDeadline with
IMAP's settings (preauth_timeout, then idle_timeout; login_timeout before authentication), the
connection counts against the service's caps, and the drain or a revocation ends the session with BYE.
Errors become replies in `to_reply` only: NotFound NO (NONEXISTENT), QuotaExceeded NO (QUOTA/MAXSIZE or
QUOTA/MAXSCRIPTS), Invalid NO with the store's text, an expired session BYE, the store away NO
(TRYLATER), anything else NO with a ref (the traceback goes to the log under it).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailflow import ids
from mailflow import log as mlog
from mailflow.connections import InputDeadline
from mailflow.errors import Invalid, NotFound, ProtocolError, QuotaExceeded, ServiceUnavailable
from mailflow.sieve.script import SUPPORTED
from mailflow.store.api import TOO_MANY_SCRIPTS, Principal
from mailflow.store.client import SessionExpired
from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.context import Context, session_id
from mailflow_imap_pop3.listener import Connection
from mailflow_imap_pop3.managesieve import auth, scripts
from mailflow_imap_pop3.managesieve import responses as rsp
from mailflow_imap_pop3.managesieve.parser import Command, FrameError, Framer, ParseError
from mailflow_imap_pop3.managesieve.responses import Reply
from mailflow_imap_pop3.stream_session import StreamSession

log = logging.getLogger(__name__)


class State(enum.Flag):
    NOT_AUTH = enum.auto()
    AUTH = enum.auto()
    LOGOUT = enum.auto()


ANY = State.NOT_AUTH | State.AUTH
Handler = Callable[["Session", Command], Awaitable[Reply | None]]


@dataclass(frozen=True, slots=True)
class Spec:
    handler: Handler
    states: State


COMMANDS: dict[str, Spec] = {
    "CAPABILITY": Spec(auth.cmd_capability, ANY),
    "NOOP": Spec(auth.cmd_noop, ANY),
    "LOGOUT": Spec(auth.cmd_logout, ANY),
    "STARTTLS": Spec(auth.cmd_starttls, State.NOT_AUTH),
    "AUTHENTICATE": Spec(auth.cmd_authenticate, State.NOT_AUTH),
    "UNAUTHENTICATE": Spec(auth.cmd_unauthenticate, State.AUTH),
    "HAVESPACE": Spec(scripts.cmd_havespace, State.AUTH),
    "PUTSCRIPT": Spec(scripts.cmd_putscript, State.AUTH),
    "CHECKSCRIPT": Spec(scripts.cmd_checkscript, State.AUTH),
    "LISTSCRIPTS": Spec(scripts.cmd_listscripts, State.AUTH),
    "SETACTIVE": Spec(scripts.cmd_setactive, State.AUTH),
    "GETSCRIPT": Spec(scripts.cmd_getscript, State.AUTH),
    "DELETESCRIPT": Spec(scripts.cmd_deletescript, State.AUTH),
    "RENAMESCRIPT": Spec(scripts.cmd_renamescript, State.AUTH),
}

_COMMANDS = metrics.CommandMetrics("managesieve")
_ACTIVE = metrics.SESSIONS_ACTIVE.labels("managesieve")


def to_reply(exc: BaseException, ref: str) -> Reply:
    match exc:
        case ProtocolError():
            return exc.reply
        case ParseError():
            return Reply("NO", str(exc))
        case SessionExpired():
            return rsp.R_EXPIRED
        case NotFound():
            return Reply("NO", "No such script", "NONEXISTENT")
        case QuotaExceeded():
            code = "QUOTA/MAXSCRIPTS" if str(exc).startswith(TOO_MANY_SCRIPTS) else "QUOTA/MAXSIZE"
            return Reply("NO", str(exc).partition(": ")[2] or "Quota exceeded", code)
        case Invalid():
            text = str(exc)
            return Reply("NO", text if 0 < len(text) < 200 and text.isprintable() else "Invalid argument")
        case ServiceUnavailable() | TimeoutError() | OSError():
            log.warning("store unavailable: %s", exc, extra={"ref": ref})
            return rsp.R_UNAVAILABLE
        case _:
            log.error("internal error", exc_info=exc, extra={"ref": ref})
            return Reply("NO", f"Internal error, ref {ref}")


class Session(StreamSession):
    NOT_AUTH, LOGOUT, BYE_EVICTED, protocol = State.NOT_AUTH, State.LOGOUT, rsp.BYE_EVICTED, "managesieve"

    def __init__(self, conn: Connection, ctx: Context):
        super().__init__()
        s = ctx.settings
        self.conn, self.ctx, self.store = conn, ctx, ctx.store
        self.id = session_id("s")
        self.state = State.NOT_AUTH
        self.principal: Principal | None = None
        self.framer = Framer(s.preauth_max_line_bytes, s.preauth_max_literal_bytes)

    # --- what handlers use ----------------------------------------------------------------------------

    def capabilities(self) -> bytes:
        """RFC 5804 §1.7: one line per capability, then OK."""
        s = rsp.string
        lines = [s("IMPLEMENTATION") + b" " + s("Mailflow"), s("SIEVE") + b" " + s(" ".join(SUPPORTED))]
        if self.state == State.NOT_AUTH:
            lines.append(s("SASL") + b" " + s(" ".join(self.mechanisms()) if self.plaintext_allowed() else ""))
            if not self.tls_active and self.ctx.tls is not None:
                lines.append(s("STARTTLS"))
        lines += [s("UNAUTHENTICATE"), s("VERSION") + b" " + s("1.0")]
        return b"".join(line + b"\r\n" for line in lines)

    async def logged_in(self, principal: Principal) -> None:
        self.state = State.AUTH
        s = self.ctx.settings
        self.framer.limit(s.max_line_bytes, s.managesieve_max_script_bytes)
        self.authenticated(principal, s.idle_timeout)

    def logged_out(self) -> None:
        """UNAUTHENTICATE: back to the state of a new connection (its limits too)."""
        s = self.ctx.settings
        self.principal = None
        self.state = State.NOT_AUTH
        self.framer.limit(s.preauth_max_line_bytes, s.preauth_max_literal_bytes)

    async def read_command(self) -> Command | None:
        """The client's next line as a Command (an AUTHENTICATE response); None at EOF, timeout, or on
        input that cannot be read. A literal too big ends the session (BYE written, state LOGOUT): the
        client sends it anyway, and its octets must never be read as commands."""
        while True:
            item = self.framer.next()
            if isinstance(item, Command):
                return item
            if isinstance(item, FrameError) and item.fatal:
                self.write(Reply("BYE", item.text.capitalize()).line())
                self.state = State.LOGOUT
                return None
            if item is not None:
                return None
            if not await self.read_more():
                return None

    # --- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        metrics.SESSIONS.labels("managesieve", "tls" if self.conn.tls else "plain").inc()
        _ACTIVE.inc()
        self.ctx.sessions.add(self)
        s = self.ctx.settings
        self.timer = InputDeadline(
            s.preauth_timeout, s.min_input_rate, self._autologout,
            lambda: self.busy and not self.reading, s.login_timeout,
        )  # fmt: skip
        if self.conn.slot is not None:
            self.conn.slot.evict = self.evict
        try:
            with mlog.context(session=self.id, peer=self.conn.ip):
                self.write(self.capabilities() + Reply("OK", "Mailflow ManageSieve ready").line())
                await self._loop()
        finally:
            self.timer.cancel()
            self.ctx.sessions.discard(self)
            _ACTIVE.dec()
            if self.principal is not None:
                log.info("logout", extra={"user": self.principal.address, "session": self.id,
                                          "seconds": round(time.monotonic() - self.started, 3)})  # fmt: skip
            self.conn.close()

    def bye_line(self, text: str) -> bytes:
        return Reply("BYE", text).line()

    async def _loop(self) -> None:
        while self.state != State.LOGOUT:
            item = self.framer.next()
            if item is None:
                if not await self.read_more():
                    break
                continue
            if isinstance(item, FrameError):
                if item.fatal:
                    self.write(Reply("BYE", item.text.capitalize()).line())
                    break
                self.write(Reply("NO", item.text.capitalize()).line())
                if self._count_bad():
                    break
                continue
            if isinstance(item, ParseError):
                self.write(Reply("NO", str(item)).line())
                if self._count_bad():
                    break
                continue
            self.busy = True
            try:
                await self.execute(item)
            finally:
                self.busy = False
                self.timer.begin()
            if self.stopping and self.state != State.LOGOUT:
                self.write(Reply("BYE", self.bye).line())
                break
        try:
            await self.conn.flush()
        except (ConnectionError, OSError):
            pass

    async def execute(self, cmd: Command) -> None:
        started = time.perf_counter()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("C: %s", cmd.name + (" ****" if cmd.name == "AUTHENTICATE" else f" ({len(cmd.args)} args)"))
        spec = COMMANDS.get(cmd.name)
        bad = True  # unknown, in the wrong state, or arguments that cannot be read
        if spec is None:
            reply = Reply("NO", f"Unknown command {cmd.name[:30]}" if cmd.name else "A command starts with its name")
        elif self.state not in spec.states:
            hint = "log in first" if self.state == State.NOT_AUTH else "already logged in"
            reply = Reply("NO", f"{cmd.name} not allowed now: {hint}")
        else:
            try:
                reply = await spec.handler(self, cmd) or Reply("OK", f"{cmd.name} completed")
                bad = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reply = to_reply(exc, ids.ref())
                bad = isinstance(exc, ParseError)
                if reply is rsp.R_EXPIRED and self.principal is not None:
                    self.ctx.auth.cache.forget(self.principal)
            if reply is rsp.ANSWERED:
                _COMMANDS.observe(cmd.name, "ok", time.perf_counter() - started)
                return
        self.write(reply.line())
        if reply.status == "BYE":
            self.state = State.LOGOUT
        if not bad:
            self.bad_in_a_row = 0
        elif self._count_bad():
            return
        _COMMANDS.observe(cmd.name if spec is not None else "unknown", reply.status.lower(), time.perf_counter() - started)

    # --- the end: drain, revocation ---------------------------------------------------------------------

    def end(self, text: str) -> None:
        if self.stopping:
            return
        self.stopping, self.bye = True, text
        if not self.busy:
            self.conn.send_now(Reply("BYE", text).line())
            self.conn.close()

    def shutdown(self) -> None:
        self.end("Server shutting down, please reconnect")

    def revoke(self) -> None:
        if self.principal is not None:
            self.ctx.auth.cache.forget(self.principal)
        self.end("Session ended: the account's password or status changed")
