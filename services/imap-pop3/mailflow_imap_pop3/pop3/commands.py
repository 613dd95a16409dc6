"""POP3 commands (RFC 1939, CAPA of RFC 2449, STLS of RFC 2595, AUTH of RFC 5034: PLAIN and
SCRAM-SHA-256[-PLUS], whose success data is a last "+ " challenge answered by an empty line) and their table.

A handler takes the session and the argument text and returns the reply (bytes, or a list of pieces
sent without joining them), or a coroutine when it has to wait for the store or the client: the session
answers the first kind at once, in the callback that received the command, and runs the second in a
task. So RETR of a message already read ahead, DELE, UIDL, NOOP cost no task switch at all. A wrong
argument is -ERR; errors of the store become replies in `replies.to_reply`.
"""

from __future__ import annotations

import base64
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailflow import scram, scram_auth
from mailflow.sasl import SaslError
from mailflow_imap_pop3.pop3 import replies as R
from mailflow_imap_pop3.pop3.maildrop import dot_stuffed, stuffed, top

if TYPE_CHECKING:
    from mailflow_imap_pop3.pop3.session import Pop3Session

log = logging.getLogger(__name__)


class State(enum.Flag):
    AUTHORIZATION = enum.auto()
    TRANSACTION = enum.auto()
    UPDATE = enum.auto()


ANY = State.AUTHORIZATION | State.TRANSACTION
Reply = bytes | list[bytes]
Handler = Callable[["Pop3Session", str], Reply | Awaitable[Reply]]
TERMINATOR = b".\r\n"


@dataclass(frozen=True, slots=True)
class Spec:
    handler: Handler
    states: State
    allowed: frozenset = frozenset()  # the states one by one: a set lookup is cheaper than Flag's `in`

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(st for st in State if st in self.states))


def cmd_capa(s: Pop3Session, arg: str) -> bytes:
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
            caps += ["USER", "SASL " + " ".join(mechanisms(s))]
    return b"+OK Capability list follows\r\n" + "".join(c + "\r\n" for c in caps).encode() + b".\r\n"


def cmd_user(s: Pop3Session, arg: str) -> bytes:
    if not s.plaintext_allowed():
        return R.R_PLAINTEXT
    if not arg.strip():
        return R.R_BAD_ARGS
    s.user = arg.strip()
    return R.R_USER_OK


def cmd_pass(s: Pop3Session, arg: str) -> bytes | Awaitable[bytes]:
    if s.user is None:
        return R.R_NEED_USER
    user, s.user = s.user, None
    return s.login(user, arg)  # RFC 1939: the password may contain spaces


def mechanisms(s: Pop3Session) -> list[str]:
    return ["PLAIN", *scram_auth.mechanisms(s.conn.channel_bindings())]


async def cmd_auth(s: Pop3Session, arg: str) -> bytes:
    parts = arg.split()
    if not parts:  # the mechanisms, as pre-RFC 5034 clients ask for them
        return b"+OK\r\n" + "".join(m + "\r\n" for m in mechanisms(s)).encode() + b".\r\n"
    mechanism = parts[0].upper()
    if mechanism not in mechanisms(s) or len(parts) > 2:
        return R.R_MECHANISM
    if not s.plaintext_allowed():
        return R.R_PLAINTEXT
    if mechanism != "PLAIN":
        return await auth_scram(s, mechanism, parts[1].encode() if len(parts) == 2 else None)
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
        return await s.enter(s.ctx.auth.plain(response, s.conn.ip, "pop3", s.ctx.pop3_tokens))
    except SaslError:
        return R.R_BAD_SASL


async def auth_scram(s: Pop3Session, mechanism: str, initial: bytes | None) -> bytes:
    async def ask(challenge: bytes) -> bytes:
        s.write(b"+ " + base64.b64encode(challenge) + b"\r\n")
        line = await s.read_line(scram.MAX_ENCODED + 2)
        if line is None:  # the connection ended (or was cut off, and answered)
            s.closing = True
            raise scram_auth.Cancelled("connection ended")
        if line == b"\x00":
            raise SaslError("response missing")
        if line.strip() == b"*":
            raise scram_auth.Cancelled("Authentication cancelled")
        return scram.decode_response(line)

    bindings = s.conn.channel_bindings()
    exchange = scram.ServerExchange(mechanism, bindings, scram.MECHANISM_PLUS in mechanisms(s))
    try:
        first = scram.decode_response(initial) if initial is not None else await ask(b"")
        return await s.enter(s.ctx.auth.scram(exchange, first, ask, s.conn.ip, "pop3"))
    except scram_auth.Cancelled:
        return b"" if s.closing else R.R_AUTH_CANCELLED
    except scram.ScramError as exc:
        return R.err(f"[AUTH] Invalid SCRAM message: {exc}")
    except SaslError:
        return R.R_BAD_SASL


async def cmd_stls(s: Pop3Session, arg: str) -> bytes:
    if s.conn.tls is not None:
        return R.R_TLS_ACTIVE
    if s.ctx.tls is None:
        return R.R_NO_TLS
    if s.discard_input():  # plaintext pipelined after STLS never counts (RFC 2595 §4)
        log.warning("plaintext pipelined after STLS was discarded")
    await s.conn.start_tls(s.ctx.tls, R.R_STLS, s.settings.tls_handshake_timeout)
    return b""


def cmd_quit(s: Pop3Session, arg: str) -> bytes | Awaitable[bytes]:
    s.closing = True
    if s.state == State.TRANSACTION:
        s.state = State.UPDATE
        return _update(s)
    return R.R_BYE


async def _update(s: Pop3Session) -> bytes:
    try:
        await s.drop.update()
    except Exception as exc:
        log.warning("UPDATE failed: %s", exc)
        return R.R_UPDATE_FAILED
    finally:
        await s.release()
    return R.ok(f"Bye, {len(s.drop.deleted)} messages deleted")


def cmd_stat(s: Pop3Session, arg: str) -> bytes | Awaitable[bytes]:
    if arg.strip():
        return R.R_BAD_ARGS
    if s.drop.deleted and s.drop.sizes is None:
        return _stat(s)
    count, size = s.drop.stat_now()
    return R.ok(f"{count} {size}")


async def _stat(s: Pop3Session) -> bytes:
    count, size = await s.drop.stat()
    return R.ok(f"{count} {size}")


def cmd_list(s: Pop3Session, arg: str) -> bytes | Awaitable[bytes]:
    if s.drop.sizes is None:
        return _list_later(s, arg)
    return _list(s, arg)


async def _list_later(s: Pop3Session, arg: str) -> bytes:
    await s.drop.load_sizes()
    return _list(s, arg)


def _list(s: Pop3Session, arg: str) -> bytes:
    drop, sizes = s.drop, s.drop.sizes
    if arg.strip():
        n = s.message_number(arg)
        return n if isinstance(n, bytes) else R.ok(f"{n} {sizes[n - 1]}")
    count, size = drop.stat_now()
    lines = [f"+OK {count} messages ({size} octets)\r\n"]
    lines += [f"{n} {sizes[n - 1]}\r\n" for n in range(1, len(drop) + 1) if n not in drop.deleted]
    return "".join(lines).encode() + b".\r\n"


def cmd_uidl(s: Pop3Session, arg: str) -> bytes:
    drop = s.drop
    if arg.strip():
        n = s.message_number(arg)
        return n if isinstance(n, bytes) else R.ok(f"{n} {drop.unique_id(n)}")
    lines = ["+OK Unique-ID listing follows\r\n"]
    lines += [f"{n} {drop.unique_id(n)}\r\n" for n in range(1, len(drop) + 1) if n not in drop.deleted]
    return "".join(lines).encode() + b".\r\n"


def cmd_retr(s: Pop3Session, arg: str) -> Reply | Awaitable[Reply]:
    n = s.message_number(arg)
    if isinstance(n, bytes):
        return n
    raw = s.drop.cached(n)
    return _retr(s, raw) if raw is not None else _retr_later(s, n)


def _retr(s: Pop3Session, raw: bytes) -> list[bytes]:
    s.retrieved += 1
    s.retrieved_bytes += len(raw)
    return [b"+OK %d octets\r\n" % len(raw), stuffed(raw), TERMINATOR]


async def _retr_later(s: Pop3Session, n: int) -> list[bytes]:
    return _retr(s, await s.drop.body(n))


def cmd_top(s: Pop3Session, arg: str) -> bytes | Awaitable[bytes]:
    parts = arg.split()
    if len(parts) != 2 or not parts[1].isdigit() or len(parts[1]) > 9:
        return R.R_BAD_ARGS
    n = s.message_number(parts[0])
    if isinstance(n, bytes):
        return n
    raw = s.drop.peek(n)
    return _top(raw, int(parts[1])) if raw is not None else _top_later(s, n, int(parts[1]))


def _top(raw: bytes, lines: int) -> bytes:
    return b"+OK Top of message follows\r\n" + dot_stuffed(top(raw, lines))


async def _top_later(s: Pop3Session, n: int, lines: int) -> bytes:
    return _top(await s.drop.body(n, keep=True), lines)


def cmd_dele(s: Pop3Session, arg: str) -> bytes:
    n = s.message_number(arg)
    if isinstance(n, bytes):
        return n
    s.drop.deleted.add(n)
    return R.ok(f"Message {n} deleted")


def cmd_noop(s: Pop3Session, arg: str) -> bytes:
    return b"+OK\r\n"


def cmd_rset(s: Pop3Session, arg: str) -> bytes:
    s.drop.deleted.clear()
    count, size = s.drop.stat_now()
    return R.ok(f"Maildrop has {count} messages ({size} octets)")


def cmd_apop(s: Pop3Session, arg: str) -> bytes:
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
