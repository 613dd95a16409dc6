"""One POP3 connection (RFC 1939, CAPA and response codes of RFC 2449, STLS of RFC 2595, AUTH of RFC 5034).

States: AUTHORIZATION (USER/PASS, AUTH PLAIN, STLS, CAPA, QUIT), TRANSACTION (STAT, LIST, RETR, DELE,
NOOP, RSET, TOP, UIDL, CAPA, QUIT), UPDATE (after QUIT: the marked messages are deleted). Every
command in the wrong state or with wrong arguments gets -ERR; unknown commands too, and after
`pop3_max_bad_commands` of those in a row the connection is closed. A successful login takes the
store's maildrop lock (a second session gets -ERR [IN-USE]); the lock is released however the session
ends, and deletions only ever happen after QUIT. Pipelined commands (RFC 2449 PIPELINING) are answered
in order and flushed together.
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
from mailflow.errors import Conflict
from mailflow.store.api import Principal

from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.auth import LoginFailed, SaslError, Throttled, decode_plain
from mailflow_imap_pop3.context import Context, session_id
from mailflow_imap_pop3.listener import Connection, IdleTimer
from mailflow_imap_pop3.pop3 import replies as R
from mailflow_imap_pop3.pop3.maildrop import Maildrop, dot_stuffed, stuffed, top

log = logging.getLogger(__name__)


class State(enum.Flag):
    AUTHORIZATION = enum.auto()
    TRANSACTION = enum.auto()
    UPDATE = enum.auto()


ANY = State.AUTHORIZATION | State.TRANSACTION
Handler = Callable[["Pop3Session", str], Awaitable[bytes | list[bytes] | None]]
_TERMINATOR = b".\r\n"


@dataclass(frozen=True, slots=True)
class Spec:
    handler: Handler
    states: State
    allowed: frozenset = frozenset()  # the states one by one: a set lookup is cheaper than Flag's `in`

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(st for st in State if st in self.states))


class Pop3Session:
    def __init__(self, conn: Connection, ctx: Context):
        self.conn, self.ctx, self.store = conn, ctx, ctx.store
        self.settings = ctx.settings
        self.id = session_id("p")
        self.state = State.AUTHORIZATION
        self.user: str | None = None
        self.principal: Principal | None = None
        self.lock_token: str | None = None
        self.drop: Maildrop | None = None
        self.buf = bytearray()
        self.bad_in_a_row = 0
        self.busy = False
        self.stopping = False
        self.closing = False
        self.retrieved = self.retrieved_bytes = 0  # counted into the metrics once, at the end

    # --- plumbing ----------------------------------------------------------------------------------------

    def plaintext_allowed(self) -> bool:
        return self.conn.tls is not None or self.conn.loopback or self.settings.allow_plaintext_auth

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    async def read_line(self, limit: int = 0) -> bytes | None:
        """The next line without CRLF; None at EOF, timeout or drain. A line longer than `limit`
        (default: pop3_max_line, CRLF included) is dropped and read as b"\\0"."""
        limit = limit or self.settings.pop3_max_line
        skipping = False
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i]).rstrip(b"\r")
                del self.buf[: i + 1]
                return b"\x00" if skipping or i + 1 > limit else line
            if len(self.buf) > limit:
                self.buf.clear()
                skipping = True
            await self.conn.flush()
            if self.stopping:
                return None
            try:
                data = await self.conn.read()
            except (ConnectionError, OSError):
                return None
            if not data:
                return None
            self.timer.touch()
            self.buf += data

    def _autologout(self) -> None:
        self.conn.send_now(R.R_TIMEOUT)
        self.conn.close()

    # --- the loop ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        (_SESSIONS_TLS if self.conn.tls else _SESSIONS_PLAIN).inc()
        _ACTIVE.inc()
        self.ctx.sessions.add(self)
        self.timer = IdleTimer(self.settings.pop3_timeout, self._autologout, lambda: self.busy)
        try:
            with mlog.context(session=self.id, peer=self.conn.ip):
                self.write(R.GREETING)
                while not self.closing:
                    line = await self.read_line()
                    if line is None:
                        break
                    self.busy = True
                    try:
                        await self.execute(line)
                    finally:
                        self.busy = False
                        self.timer.touch()
                    if self.stopping and not self.closing:
                        self.write(R.R_SHUTDOWN)
                        break
                try:
                    await self.conn.flush()
                except (ConnectionError, OSError):
                    pass
        finally:
            self.timer.cancel()
            self.ctx.sessions.discard(self)
            _ACTIVE.dec()
            if self.retrieved:
                _RETRIEVED.inc(self.retrieved)
                _RETR_BYTES.inc(self.retrieved_bytes)
            if self.principal is not None:
                deleted = (
                    len(self.drop.deleted) if self.drop is not None and self.state == State.UPDATE else 0
                )
                log.info(
                    "logout", extra={"user": self.principal.address, "session": self.id, "deleted": deleted}
                )
            await self.release()
            self.conn.close()

    async def release(self) -> None:
        if self.lock_token is not None and self.principal is not None:
            token, self.lock_token = self.lock_token, None
            try:
                await asyncio.shield(self.store.pop3_unlock(self.principal, token))
            except Exception as exc:
                log.warning("maildrop unlock failed (the store's lock expires on its own): %s", exc)
        if self.principal is not None:
            self.ctx.pop3_tokens.discard(self.principal.token)

    async def execute(self, line: bytes) -> None:
        started = time.perf_counter()
        if line == b"\x00":
            self.write(R.R_TOO_LONG)
            self._bad()
            _observe("unknown", "err", started)
            return
        text = line.decode("utf-8", "replace")
        name, _, arg = text.partition(" ")
        name = name.upper()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("C: %s", f"{name} ****" if name in ("PASS", "AUTH") else text[:200])
        spec = COMMANDS.get(name)
        if spec is None:
            self.write(R.R_UNKNOWN)
            self._bad()
            _observe("unknown", "err", started)
            return
        if self.state not in spec.allowed:
            reply = R.R_WRONG_STATE
        else:
            try:
                reply = await spec.handler(self, arg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reply = R.to_reply(exc, ids.ref())
                if reply is R.R_EXPIRED:
                    self.closing = True
        if isinstance(reply, list):  # a multi-line response in pieces, sent without joining them
            self.conn.write_many(reply, sum(map(len, reply)))
            reply = reply[0]
        elif reply:
            self.write(reply)
        ok = not reply or reply.startswith(R.OK)
        if ok:
            self.bad_in_a_row = 0
        _observe(name, "ok" if ok else "err", started)

    def _bad(self) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.settings.pop3_max_bad_commands:
            self.write(R.R_TOO_MANY_ERRORS)
            self.closing = True

    def shutdown(self) -> None:
        """The service is stopping: close now if we wait for the client, else after the command."""
        self.stopping = True
        if not self.busy:
            self.conn.send_now(R.R_SHUTDOWN)
            self.conn.close()

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
        try:
            principal = await self.ctx.auth.login(user, password, self.conn.ip, "pop3", self.ctx.pop3_tokens)
        except Throttled:
            metrics.LOGINS.labels("pop3", "throttled").inc()
            return R.R_THROTTLED
        except LoginFailed:
            metrics.LOGINS.labels("pop3", "failed").inc()
            log.info("login failed", extra={"user": user[:100], "peer": self.conn.ip})
            return R.R_AUTH_FAILED
        except Exception:
            metrics.LOGINS.labels("pop3", "unavailable").inc()
            raise
        metrics.LOGINS.labels("pop3", "ok").inc()
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
        try:
            sel = await self.store.select(principal, "INBOX", claim_recent=False)
        except BaseException:
            await self.release()
            self.principal = None
            raise
        uids = sel.uids
        self.drop = Maildrop(
            self.store, principal, sel.status.id, sel.status.uidvalidity, uids, sel.status.size,
            self.settings.pop3_prefetch_bytes,
        )  # fmt: skip
        self.state = State.TRANSACTION
        mlog.session_var.set(self.id)
        log.info(
            "login", extra={"user": principal.address, "messages": len(uids), "tls": bool(self.conn.tls)}
        )
        return R.ok(f"Logged in, {len(uids)} messages")


async def cmd_capa(s: Pop3Session, arg: str) -> bytes:
    caps = [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "EXPIRE NEVER",
        "IMPLEMENTATION Mailflow",
    ]
    if s.state == State.AUTHORIZATION:
        if s.conn.tls is None and s.ctx.tls is not None:
            caps.append("STLS")
        if s.plaintext_allowed():
            caps += ["USER", "SASL PLAIN"]
    return b"+OK Capability list follows\r\n" + "".join(c + "\r\n" for c in caps).encode() + b".\r\n"


async def cmd_user(s: Pop3Session, arg: str) -> bytes:
    if not s.plaintext_allowed():
        return R.R_PLAINTEXT
    if not arg.strip():
        return R.R_BAD_ARGS
    s.user = arg.strip()
    return R.R_USER_OK


async def cmd_pass(s: Pop3Session, arg: str) -> bytes:
    if s.user is None:
        return R.R_NEED_USER
    user, s.user = s.user, None
    return await s.login(user, arg)  # RFC 1939: the password may contain spaces


async def cmd_auth(s: Pop3Session, arg: str) -> bytes:
    parts = arg.split()
    if not parts:
        return b"+OK\r\nPLAIN\r\n.\r\n"  # the mechanisms, as pre-RFC 5034 clients ask for them
    if parts[0].upper() != "PLAIN" or len(parts) > 2:
        return R.R_MECHANISM
    if not s.plaintext_allowed():
        return R.R_PLAINTEXT
    if len(parts) == 2:
        response = parts[1].encode()
    else:
        s.write(b"+ \r\n")
        line = await s.read_line(16_384)
        if line is None:
            s.closing = True
            return b""
        if line == b"\x00":
            return R.R_BAD_SASL
        response = line.strip()
    if response == b"*":
        return R.R_AUTH_CANCELLED
    try:
        user, password = decode_plain(b"" if response == b"=" else response)
    except SaslError:
        return R.R_BAD_SASL
    return await s.login(user, password)


async def cmd_stls(s: Pop3Session, arg: str) -> bytes:
    if s.conn.tls is not None:
        return R.R_TLS_ACTIVE
    if s.ctx.tls is None:
        return R.R_NO_TLS
    if s.buf:
        s.buf.clear()  # plaintext pipelined after STLS never counts (RFC 2595 §4)
    s.write(R.R_STLS)
    await s.conn.start_tls(s.ctx.tls, s.settings.tls_handshake_timeout)
    return b""


async def cmd_quit(s: Pop3Session, arg: str) -> bytes:
    s.closing = True
    if s.state == State.TRANSACTION:
        s.state = State.UPDATE
        try:
            await s.drop.update()
        except Exception as exc:
            log.warning("UPDATE failed: %s", exc)
            return R.R_UPDATE_FAILED
        finally:
            await s.release()
        return R.ok(f"Bye, {len(s.drop.deleted)} messages deleted")
    return R.R_BYE


async def cmd_stat(s: Pop3Session, arg: str) -> bytes:
    if arg.strip():
        return R.R_BAD_ARGS
    count, size = await s.drop.stat()
    return R.ok(f"{count} {size}")


async def cmd_list(s: Pop3Session, arg: str) -> bytes:
    drop = s.drop
    sizes = await drop.load_sizes()
    if arg.strip():
        n = s.message_number(arg)
        return n if isinstance(n, bytes) else R.ok(f"{n} {sizes[n - 1]}")
    count, size = await drop.stat()
    lines = [f"+OK {count} messages ({size} octets)\r\n"]
    lines += [f"{n} {sizes[n - 1]}\r\n" for n in range(1, len(drop) + 1) if n not in drop.deleted]
    return "".join(lines).encode() + b".\r\n"


async def cmd_uidl(s: Pop3Session, arg: str) -> bytes:
    drop = s.drop
    if arg.strip():
        n = s.message_number(arg)
        return n if isinstance(n, bytes) else R.ok(f"{n} {drop.unique_id(n)}")
    lines = ["+OK Unique-ID listing follows\r\n"]
    lines += [f"{n} {drop.unique_id(n)}\r\n" for n in range(1, len(drop) + 1) if n not in drop.deleted]
    return "".join(lines).encode() + b".\r\n"


_RETRIEVED = metrics.MESSAGES.labels("pop3")
_RETR_BYTES = metrics.BYTES.labels("pop3")


async def cmd_retr(s: Pop3Session, arg: str) -> bytes | list[bytes]:
    n = s.message_number(arg)
    if isinstance(n, bytes):
        return n
    raw = await s.drop.body(n)
    s.retrieved += 1
    s.retrieved_bytes += len(raw)
    return [b"+OK %d octets\r\n" % len(raw), stuffed(raw), _TERMINATOR]


async def cmd_top(s: Pop3Session, arg: str) -> bytes:
    parts = arg.split()
    if len(parts) != 2 or not parts[1].isdigit() or len(parts[1]) > 9:
        return R.R_BAD_ARGS
    n = s.message_number(parts[0])
    if isinstance(n, bytes):
        return n
    raw = await s.drop.body(n)
    return b"+OK Top of message follows\r\n" + dot_stuffed(top(raw, int(parts[1])))


async def cmd_dele(s: Pop3Session, arg: str) -> bytes:
    n = s.message_number(arg)
    if isinstance(n, bytes):
        return n
    s.drop.deleted.add(n)
    return R.ok(f"Message {n} deleted")


async def cmd_noop(s: Pop3Session, arg: str) -> bytes:
    return b"+OK\r\n"


async def cmd_rset(s: Pop3Session, arg: str) -> bytes:
    s.drop.deleted.clear()
    count, size = await s.drop.stat()
    return R.ok(f"Maildrop has {count} messages ({size} octets)")


async def cmd_apop(s: Pop3Session, arg: str) -> bytes:
    return R.err("APOP is not supported, use USER/PASS or AUTH PLAIN over TLS")


COMMANDS: dict[str, Spec] = {
    "CAPA": Spec(cmd_capa, ANY),
    "QUIT": Spec(cmd_quit, ANY),
    "USER": Spec(cmd_user, State.AUTHORIZATION),
    "PASS": Spec(cmd_pass, State.AUTHORIZATION),
    "AUTH": Spec(cmd_auth, State.AUTHORIZATION),
    "APOP": Spec(cmd_apop, State.AUTHORIZATION),
    "STLS": Spec(cmd_stls, State.AUTHORIZATION),
    "STAT": Spec(cmd_stat, State.TRANSACTION),
    "LIST": Spec(cmd_list, State.TRANSACTION),
    "UIDL": Spec(cmd_uidl, State.TRANSACTION),
    "RETR": Spec(cmd_retr, State.TRANSACTION),
    "TOP": Spec(cmd_top, State.TRANSACTION),
    "DELE": Spec(cmd_dele, State.TRANSACTION),
    "NOOP": Spec(cmd_noop, State.TRANSACTION),
    "RSET": Spec(cmd_rset, State.TRANSACTION),
}

_metric_children: dict[tuple[str, str], object] = {}
_SESSIONS_TLS = metrics.SESSIONS.labels("pop3", "tls")
_SESSIONS_PLAIN = metrics.SESSIONS.labels("pop3", "plain")
_ACTIVE = metrics.SESSIONS_ACTIVE.labels("pop3")


def _observe(cmd: str, result: str, started: float) -> None:
    key = (cmd, result)
    counter = _metric_children.get(key)
    if counter is None:
        counter = _metric_children[key] = metrics.COMMANDS.labels("pop3", cmd, result)
        _metric_children[(cmd, "")] = metrics.COMMAND_SECONDS.labels("pop3", cmd)
    counter.inc()
    _metric_children[(cmd, "")].observe(time.perf_counter() - started)
