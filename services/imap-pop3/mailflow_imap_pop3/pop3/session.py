"""One POP3 connection (RFC 1939, 2449, 2595, 5034): an asyncio Protocol, states, and the command loop.

States: AUTHORIZATION (USER/PASS, AUTH PLAIN, STLS, CAPA, QUIT), TRANSACTION (STAT, LIST, RETR, DELE,
NOOP, RSET, TOP, UIDL, CAPA, QUIT), UPDATE (after QUIT: the marked messages are deleted). Every
command in the wrong state or with wrong arguments gets -ERR; unknown commands too, and after
`pop3_max_bad_commands` of those in a row the connection is closed. A successful login takes the
store's maildrop lock (a second session gets -ERR [IN-USE]), renewed every `pop3_lock_renew_s` while the
session lives (the store's lock lasts pop3_lock_ttl, 15 s: a replica that crashes leaves it locked no
longer); the lock is released however the session ends, and deletions only ever happen after QUIT.

The session is driven by the bytes that arrive (`feed`): each whole line is answered right there when
its handler can answer without waiting (a RETR of a message already read ahead is the common case), and
in a task when it has to wait for the store; lines that arrive meanwhile (RFC 2449 PIPELINING) wait
their turn. Replies are flushed together, and the transport's flow control pauses reading while the
client does not keep up.

Input is bounded (issue 12.5): a command line is at most `pop3_max_line` octets with its CRLF (RFC 2449
§4: 255); a longer one is answered -ERR and skipped, and a client that sends more than that with no
line end at all is answered -ERR and cut off. Commands waiting behind a running one are held up to
`pop3_max_pipelined_bytes`; past that, reading pauses until they are answered.
Input is bounded in time too (the slowloris rule of mailflow.connections.InputDeadline): a command
line must be in within `preauth_timeout` (logged in: `pop3_timeout`) of the reply before it, plus a
second per `min_input_rate` octets; before login the session lasts at most `login_timeout`. A session
that has not logged in and waits for the client may be evicted when the service is full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from mailflow import ids
from mailflow import log as mlog
from mailflow.connections import InputDeadline, Slot
from mailflow.errors import Conflict
from mailflow.store.api import Principal
from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.auth import LoginFailed, Throttled, counted
from mailflow_imap_pop3.context import Context, session_id
from mailflow_imap_pop3.listener import TransportConnection
from mailflow_imap_pop3.pop3 import replies as R
from mailflow_imap_pop3.pop3.commands import COMMANDS, State
from mailflow_imap_pop3.pop3.maildrop import Maildrop

log = logging.getLogger(__name__)

_COMMANDS = metrics.CommandMetrics("pop3")
_SESSIONS_TLS = metrics.SESSIONS.labels("pop3", "tls")
_SESSIONS_PLAIN = metrics.SESSIONS.labels("pop3", "plain")
_ACTIVE = metrics.SESSIONS_ACTIVE.labels("pop3")
_RETRIEVED = metrics.MESSAGES.labels("pop3")
_RETR_BYTES = metrics.BYTES.labels("pop3")
_TOO_LONG = b"\x00"  # what an over-long line reads as
_CUT_OFF = b"\x01"  # what input with no line end past the limit reads as: answered, then closed


class Pop3Protocol(asyncio.Protocol):
    """The transport's side of a session. `done` resolves when the session has ended (lock released)."""

    def __init__(self, ctx: Context, peer: tuple, listener: str, slot: Slot | None = None):
        self.ctx, self.peer, self.listener, self.slot = ctx, peer, listener, slot
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.session: Pop3Session | None = None
        self.conn: TransportConnection | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.conn = TransportConnection(transport, self, self.peer, self.listener, self.slot)
        self.session = Pop3Session(self.conn, self.ctx, self.done)
        self.session.start()

    def data_received(self, data: bytes) -> None:
        self.session.feed(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.lost()
        elif not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        self.conn.pause_writing()
        self.conn.transport.pause_reading()  # no more commands until the client reads what it asked for

    def resume_writing(self) -> None:
        self.conn.resume_writing()
        if not self.session.input_full:
            self.conn.transport.resume_reading()

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.closed = True
            self.conn.transport.abort()


class Pop3Session:
    def __init__(self, conn: TransportConnection, ctx: Context, done: asyncio.Future):
        self.conn, self.ctx, self.store, self.done = conn, ctx, ctx.store, done
        self.settings = ctx.settings
        self.id = session_id("p")
        self.state = State.AUTHORIZATION
        self.user: str | None = None
        self.principal: Principal | None = None
        self.lock_token: str | None = None
        self.renewing: asyncio.Task | None = None  # keeps the maildrop lock while the session lives
        self.drop: Maildrop | None = None
        self.buf = bytearray()
        self.input_full = False  # reading paused: pop3_max_pipelined_bytes wait to be answered
        self.bad_in_a_row = 0
        self.task: asyncio.Task | None = None  # the command that waits for the store or the client
        self.waiter: asyncio.Future | None = None  # a handler waiting for a line (AUTH continuation)
        self.waiter_limit = 0
        self.stopping = False  # the drain or a revocation: `end_reply`, then close, as soon as we can
        self.end_reply = R.R_SHUTDOWN
        self.closing = False
        self.finished = False
        self.retrieved = self.retrieved_bytes = 0  # counted into the metrics once, at the end

    @property
    def busy(self) -> bool:
        return self.task is not None

    # --- plumbing ----------------------------------------------------------------------------------------

    def plaintext_allowed(self) -> bool:
        return self.conn.tls is not None or self.conn.loopback or self.settings.allow_plaintext_auth

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    def next_line(self, limit: int) -> bytes | None:
        """The next whole line without CRLF, or None. A line longer than `limit` (CRLF included) reads
        as _TOO_LONG; more than `limit` octets with no line end read as _CUT_OFF (and are dropped)."""
        buf = self.buf
        i = buf.find(b"\n", 0, limit + 1)
        if i < 0:
            if len(buf) <= limit:
                return None
            if buf.find(b"\n") < 0:
                buf.clear()
                return _CUT_OFF
            i = buf.find(b"\n")
        line = bytes(buf[:i])
        del buf[: i + 1]
        if i + 1 > limit:
            return _TOO_LONG
        return line[:-1] if line.endswith(b"\r") else line

    def discard_input(self) -> int:
        """Drop every octet received and not yet answered (STLS); returns how many."""
        n = len(self.buf)
        self.buf.clear()
        self._resume_input()
        return n

    def _resume_input(self) -> None:
        if self.input_full and len(self.buf) <= self.settings.pop3_max_pipelined_bytes:
            self.input_full = False
            if not self.conn.writing_paused and not self.conn.closed:
                self.conn.transport.resume_reading()

    async def read_line(self, limit: int) -> bytes | None:
        """A line for a handler (AUTH's continuation); None when the connection ends first (or the
        client sent more than `limit` with no line end: then it is answered and closed)."""
        line = self.next_line(limit)
        if line is _CUT_OFF:
            return self._cut_off()
        if line is not None:
            return line
        self.conn.flush_now()
        self.waiter = asyncio.get_running_loop().create_future()
        self.waiter_limit = limit
        try:
            return await self.waiter
        finally:
            self.waiter = None

    # --- driven by the transport ---------------------------------------------------------------------------

    def start(self) -> None:
        (_SESSIONS_TLS if self.conn.tls else _SESSIONS_PLAIN).inc()
        _ACTIVE.inc()
        self.ctx.sessions.add(self)
        s = self.settings
        self.timer = InputDeadline(
            s.preauth_timeout, s.min_input_rate, self._autologout,
            lambda: self.busy and self.waiter is None, s.login_timeout,
        )  # fmt: skip
        if self.conn.slot is not None:
            self.conn.slot.evict = self.evict
        self.conn.send_now(R.GREETING)

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self.timer.received(len(data))
        self.buf += data
        if self.waiter is not None:
            line = self.next_line(self.waiter_limit)
            if line is _CUT_OFF:
                line = self._cut_off()
            if (line is not None or self.closing) and not self.waiter.done():
                self.waiter.set_result(line)
        elif self.task is None:
            self.pump()
        elif len(self.buf) > self.settings.pop3_max_pipelined_bytes and not self.input_full:
            self.input_full = True  # a command is running: hold the rest, but no more than this
            self.conn.transport.pause_reading()

    def _cut_off(self) -> None:
        """More than a line's worth with no line end: answer and close (Dovecot does the same)."""
        self.write(R.R_TOO_LONG)
        self.closing = True
        log.info("input line too long: connection closed", extra={"session": self.id})

    def pump(self) -> None:
        """Answer every whole line there is, until one has to wait (then a task goes on from there)."""
        limit = self.settings.pop3_max_line
        while not self.closing and self.task is None:
            line = self.next_line(limit)
            if line is None:
                break
            if line is _CUT_OFF:
                self._cut_off()
                break
            self.execute(line)
            self.timer.begin()
        self._resume_input()
        if self.task is None:
            self.conn.flush_now()
            if self.closing:
                self.finish()

    def lost(self) -> None:
        self.conn.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if self.task is None:
            self.finish()

    def _autologout(self) -> None:
        log.info("input deadline passed", extra={"peer": self.conn.ip, "session": self.id})
        self.conn.send_now(R.R_TIMEOUT)
        self.closing = True
        self.finish()

    def evict(self) -> bool:
        """The service is full: end this session if it has not logged in and waits for the client."""
        if self.state != State.AUTHORIZATION or (self.busy and self.waiter is None) or self.finished:
            return False
        log.info("evicted: the service is full", extra={"peer": self.conn.ip, "session": self.id})
        metrics.EVICTED.labels(self.conn.listener).inc()
        self.conn.send_now(R.R_EVICTED)
        self.closing = True
        self.finish()  # a handler waiting for a line (AUTH) gets None when the connection is lost
        return True

    def end(self, reply: bytes) -> None:
        """Close with `reply` now if we wait for the client, else right after the running command. The
        maildrop is left as it was: deletions only ever happen after QUIT (RFC 1939 §6)."""
        if self.stopping or self.finished:
            return
        self.stopping, self.end_reply = True, reply
        if self.task is None:
            self.conn.send_now(reply)
            self.closing = True
            self.finish()

    def shutdown(self) -> None:
        """The service is stopping."""
        self.end(R.R_SHUTDOWN)

    def revoke(self) -> None:
        """The user's password changed, or it was disabled or deleted: this session ends now. The store
        dropped its maildrop lock with the revocation (and would refuse the unlock)."""
        self.lock_token = None
        self.end(R.R_REVOKED)

    def finish(self) -> None:
        """The session is over: account for it, close, and release the maildrop lock (in a task)."""
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        self.ctx.sessions.discard(self)
        _ACTIVE.dec()
        if self.retrieved:
            _RETRIEVED.inc(self.retrieved)
            _RETR_BYTES.inc(self.retrieved_bytes)
        if self.principal is not None:
            deleted = len(self.drop.deleted) if self.drop is not None and self.state == State.UPDATE else 0
            log.info("logout", extra={"user": self.principal.address, "session": self.id, "deleted": deleted})
        self.conn.flush_now()
        self.conn.close()
        asyncio.ensure_future(self._released())

    async def _keep_lock(self, principal: Principal) -> None:
        """Renew the maildrop lock every pop3_lock_renew_s (the store's lasts pop3_lock_ttl): a session of a
        replica that crashed stops renewing, and the user can log in again elsewhere once it expires. A
        lock found taken by another session ends this one; a store that does not answer is tried again."""
        while True:
            await asyncio.sleep(self.settings.pop3_lock_renew_s)
            try:
                await self.store.pop3_lock(principal)
            except Conflict:
                log.warning("maildrop lock lost", extra={"user": principal.address, "session": self.id})
                self.lock_token = None
                self.end(R.R_IN_USE)
                return
            except Exception as exc:
                log.warning("maildrop lock not renewed (tried again): %s", exc, extra={"session": self.id})

    async def _released(self) -> None:
        try:
            await self.release()
        finally:
            if not self.done.done():
                self.done.set_result(None)

    async def release(self) -> None:
        if self.renewing is not None:  # a lock released is not renewed (a login whose SELECT failed)
            self.renewing.cancel()
            self.renewing = None
        if self.lock_token is not None and self.principal is not None:
            token, self.lock_token = self.lock_token, None
            try:
                await asyncio.shield(self.store.pop3_unlock(self.principal, token))
            except Exception as exc:
                log.warning("maildrop unlock failed (the store's lock expires on its own): %s", exc)
        if self.principal is not None:
            self.ctx.pop3_tokens.discard(self.principal.token)

    # --- commands ----------------------------------------------------------------------------------------

    def execute(self, line: bytes) -> None:
        started = time.perf_counter()
        if line == _TOO_LONG:
            self.write(R.R_TOO_LONG)
            self._bad()
            _COMMANDS.observe("unknown", "err", time.perf_counter() - started)
            return
        text = line.decode("utf-8", "replace")
        name, _, arg = text.partition(" ")
        name = name.upper()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "C: %s",
                f"{name} ****" if name in ("PASS", "AUTH") else text[:200],
                extra={"session": self.id},
            )
        spec = COMMANDS.get(name)
        if spec is None:
            self.write(R.R_UNKNOWN)
            self._bad()
            _COMMANDS.observe("unknown", "err", time.perf_counter() - started)
            return
        if self.state not in spec.allowed:
            self._answer(R.R_WRONG_STATE, name, started)
            return
        try:
            reply = spec.handler(self, arg)
        except Exception as exc:
            reply = self._fault(exc)
        if isinstance(reply, bytes | list):
            self._answer(reply, name, started)
        else:  # a coroutine: it waits for the store or the client
            self.task = asyncio.ensure_future(self._later(reply, name, started))

    async def _later(self, pending, name: str, started: float) -> None:
        try:
            with mlog.context(session=self.id, peer=self.conn.ip):
                try:
                    reply = await pending
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reply = self._fault(exc)
                self._answer(reply, name, started)
                if self.stopping and not self.closing:
                    self.write(self.end_reply)
                    self.closing = True
                if not self.conn.closed:
                    await self.conn.flush()  # waits while the client does not read
        finally:
            self.task = None
            self.timer.begin()
        if self.conn.closed:
            self.finish()
        else:
            self.pump()

    def _fault(self, exc: Exception) -> bytes:
        reply = R.to_reply(exc, ids.ref())
        if reply is R.R_EXPIRED:
            self.closing = True
        return reply

    def _answer(self, reply: bytes | list[bytes], name: str, started: float) -> None:
        if isinstance(reply, list):  # a multi-line response in pieces, sent without joining them
            self.conn.write_many(reply, sum(map(len, reply)))
            reply = reply[0]
        elif reply:
            self.write(reply)
        ok = not reply or reply.startswith(b"+OK")
        if ok:
            self.bad_in_a_row = 0
        _COMMANDS.observe(name, "ok" if ok else "err", time.perf_counter() - started)

    def _bad(self) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.settings.pop3_max_bad_commands:
            self.write(R.R_TOO_MANY_ERRORS)
            self.closing = True

    def message_number(self, arg: str) -> int | bytes:
        """A message number argument: the number, or the -ERR to answer."""
        arg = arg.strip()
        if not arg.isdigit() or len(arg) > 10:
            return R.R_BAD_ARGS
        n = int(arg)
        if not self.drop.exists(n):
            return R.R_NO_SUCH
        if n in self.drop.deleted:
            return R.R_DELETED
        return n

    # --- logging in ------------------------------------------------------------------------------------

    async def login(self, user: str, password: str) -> bytes:
        return await self.enter(self.ctx.auth.login(user, password, self.conn.ip, "pop3", self.ctx.pop3_tokens))

    async def enter(self, authenticating: Awaitable[Principal]) -> bytes:
        """Log in with the principal `authenticating` gives (USER/PASS, AUTH PLAIN or SCRAM); a SASL
        message that cannot be used (SaslError) is the caller's to answer."""
        try:
            principal = await counted("pop3", self.conn.ip, authenticating)
        except Throttled:
            return R.R_THROTTLED
        except LoginFailed as exc:
            return R.R_AUTH_FAILED if exc.scram_error is None else R.scram_failed(exc.scram_error)
        self.ctx.pop3_tokens.add(principal.token)  # before any await: no other POP3 session gets it now
        self.principal = principal
        try:
            token = await self.store.pop3_lock(principal)
        except BaseException as exc:
            self.ctx.pop3_tokens.discard(principal.token)
            self.principal = None
            if isinstance(exc, Conflict):
                return R.R_IN_USE
            raise
        self.lock_token = token
        self.renewing = asyncio.create_task(self._keep_lock(principal))
        try:
            sel = await self.store.select(principal, "INBOX", claim_recent=False)
        except BaseException:
            await self.release()
            self.principal = None
            raise
        self.drop = Maildrop(
            self.store, principal, sel.status.id, sel.status.uidvalidity, sel.uids, sel.status.size,
            self.settings.pop3_prefetch_bytes,
        )  # fmt: skip
        self.state = State.TRANSACTION
        self.timer.authenticated(self.settings.pop3_timeout)
        if self.conn.slot is not None:
            self.conn.slot.evict = None
        log.info(
            "login",
            extra={
                "user": principal.address,
                "messages": len(sel.uids),
                "tls": bool(self.conn.tls),
                "session": self.id,
            },
        )
        return R.ok(f"Logged in, {len(sel.uids)} messages")
