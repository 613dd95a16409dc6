"""One SMTP dialogue: the states (state.State), the command table, and the read-check-run loop.

The loop takes a command line from the connection (connection.py: bytes, framing, TLS), checks it
(a line over its limit, a bare CR or LF, a NUL or bad UTF-8 is 500 5.5.2 and not run), looks the verb
up in the table (`COMMANDS`: handler, allowed states; unknown is 500 5.5.1), refuses a command the
state does not allow with the reply `out_of_sequence` gives (503, or 554 for DATA without recipients),
and runs the handler (commands/). Every exception of a handler becomes a reply in replies.to_reply,
and the session goes on; only while message octets are being read (State.DATA) does it then close,
since the rest of the stream cannot be told from commands. Replies are collected and written once
the session needs more input, so a pipelined group (RFC 2920) gets its replies in one write.
The session ends at QUIT, at `max_errors` 5xx replies, at `max_auth_failures` failed AUTHs, at the
input deadline (421 4.4.2: a command, with its message, late by the slowloris rule of
mailflow.connections, or an unauthenticated session older than `session_lifetime`), at a bad BDAT
size, when the client goes away, at an eviction (421 4.3.2: the server is full, this session had not
authenticated and was waiting between transactions), or at the service's drain (421 4.3.2 between
transactions; a transaction under way finishes first).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailflow import ids
from mailflow import log as mflog
from mailflow.connections import Slot
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.commands import auth, basic, transaction
from mailflow_smtp_ingress.connection import Connection, ConnectionLost
from mailflow_smtp_ingress.framing import TOO_LONG
from mailflow_smtp_ingress.state import ANY, Client, Listener, State, Transaction

if TYPE_CHECKING:
    from mailflow_smtp_ingress.server import SmtpServer

log = logging.getLogger(__name__)

Handler = Callable[["Session", str], Awaitable[None]]

# RFC 5321 §4.5.3.1.4: 512 octets per command line, plus what the extensions of MAIL and RCPT add
# (RFC 1870 SIZE, RFC 3461 RET/ENVID/NOTIFY/ORCPT, RFC 4954 AUTH=); AUTH lines may be max_auth_line.
_MAIL_ALLOWANCE = 26 + 500 + 100 + 512
_RCPT_ALLOWANCE = 500 + 40 + 512


@dataclass(frozen=True, slots=True)
class Spec:
    handler: Handler
    states: State
    no_args: bool = False  # any argument is 501 5.5.4, before the state is looked at
    allowance: int | None = 0  # octets beyond max_command_line the line may have; None: max_auth_line
    refused: Handler | None = None  # runs instead of the out-of-sequence reply (BDAT reads its chunk)
    allowed: frozenset = frozenset()  # the states one by one: a set lookup is cheaper than Flag's `in`

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(st for st in State if st in self.states))


COMMANDS: dict[str, Spec] = {
    "EHLO": Spec(basic.cmd_ehlo, ANY),
    "HELO": Spec(basic.cmd_helo, ANY),
    "MAIL": Spec(transaction.cmd_mail, State.READY, allowance=_MAIL_ALLOWANCE),
    "RCPT": Spec(transaction.cmd_rcpt, State.MAIL | State.RCPT, allowance=_RCPT_ALLOWANCE),
    "DATA": Spec(transaction.cmd_data, State.RCPT, no_args=True),
    "BDAT": Spec(transaction.cmd_bdat, State.RCPT | State.BDAT, refused=transaction.cmd_bdat_out_of_sequence),
    "RSET": Spec(basic.cmd_rset, ANY, no_args=True),
    "NOOP": Spec(basic.cmd_noop, ANY),
    "VRFY": Spec(basic.cmd_vrfy, ANY),
    "EXPN": Spec(basic.cmd_not_implemented, ANY),
    "HELP": Spec(basic.cmd_help, ANY),
    "QUIT": Spec(basic.cmd_quit, ANY),
    "STARTTLS": Spec(basic.cmd_starttls, ANY, no_args=True),
    "AUTH": Spec(auth.cmd_auth, State.READY, allowance=None),
}
# The MX listener without MX_AUTH offers no AUTH: there it is 502 in every state.
COMMANDS_NO_AUTH = {**COMMANDS, "AUTH": Spec(basic.cmd_not_implemented, ANY, allowance=None)}


class Session:
    def __init__(self, server: SmtpServer, listener: Listener, peer: tuple[str, int] | None = None):
        """`peer`: the client's address after PROXY; None takes the socket's."""
        self.server = server
        self.settings = s = server.settings
        self.handler = server.handler
        self.listener = listener
        self.peer = peer
        self.conn = Connection(
            self, s.idle_timeout, s.min_input_rate, s.session_lifetime, server.buffer_limit
        )
        self.state = State.GREETED
        self.client: Client | None = None
        self.tx: Transaction | None = None
        self.auth_listener = listener != "mx" or s.mx_auth
        self.commands = COMMANDS if self.auth_listener else COMMANDS_NO_AUTH
        self.errors = 0
        self.auth_failures = 0
        self.slot: Slot | None = None  # while the connection limiter counts this session
        self.task = None
        self.debug = log.isEnabledFor(logging.DEBUG)

    # --- what the connection tells us ------------------------------------------------------------------

    def opened(self) -> None:
        conn = self.conn
        peer = self.peer or conn.transport.get_extra_info("peername") or ("0.0.0.0", 0)  # IPv6: 4 items
        self.client = Client(secrets.token_hex(4), self.listener, str(peer[0]), int(peer[1]), tls=conn.tls)
        self.server.session_started(self)
        self.task = conn.loop.create_task(self.run())

    def lost(self) -> None:
        self.server.session_ended(self)

    def idle(self) -> None:
        log.info("input deadline passed", extra={"session": self.client.session_id, "peer": self.client.ip})
        metrics.REJECTED.labels("command", "timeout").inc()
        self.close(R.R421_TIMEOUT)

    def evict(self) -> bool:
        """The server is full: end this session if it has not authenticated and waits between
        transactions (the connection limiter asks, oldest first)."""
        if self.client.principal is not None or self.in_transaction or not self.conn.waiting:
            return False
        log.info(
            "evicted: the server is full", extra={"session": self.client.session_id, "peer": self.client.ip}
        )
        metrics.REJECTED.labels("connect", "evicted").inc()
        self.close(R.R421_EVICTED)
        return True

    # --- what handlers use ---------------------------------------------------------------------------------

    def reply(self, r: R.Reply) -> None:
        self.conn.out.append(r.wire)
        if self.debug:
            log.debug("<<< %s", str(r), extra={"session": self.client.session_id})
        if r.code >= 500:
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                metrics.REJECTED.labels("command", "too_many_errors").inc()
                self.close(R.R421_TOO_MANY_ERRORS)

    def close(self, last: R.Reply | None = None) -> None:
        """Send what is pending (and `last`), then close; the loop ends at its next read."""
        self.conn.close(last.wire if last is not None else None)

    def greeted(self) -> None:
        """HELO/EHLO: a new start, no transaction."""
        self.tx, self.state = None, State.READY

    def restart(self) -> None:
        """TLS is up: as if the connection had just been made (RFC 3207 §4.2)."""
        self.tx, self.state = None, State.GREETED

    def begin(self, tx: Transaction) -> None:
        self.tx, self.state = tx, State.MAIL

    def end_transaction(self) -> None:
        self.tx = None
        self.state = State.READY if self.client.helo else State.GREETED

    @property
    def in_transaction(self) -> bool:
        """From MAIL to the reply that ends the transaction (the drain lets it finish)."""
        return self.tx is not None

    def out_of_sequence(self, verb: str) -> R.Reply:
        """What `verb` gets in a state that does not allow it (RFC 5321 §4.1.4, §3.3)."""
        state = self.state
        if verb == "RCPT":
            return R.R503_MIXED_DATA_BDAT if state is State.BDAT else R.R503_NEED_MAIL
        if state is State.GREETED:
            return R.R503_HELO_FIRST
        match verb, state:
            case "MAIL", _:
                return R.R503_NESTED_MAIL
            case "AUTH", _:
                return R.R503_ALREADY_AUTH if self.client.principal else R.R503_AUTH_IN_TRANSACTION
            case "DATA", State.BDAT:
                return R.R503_MIXED_DATA_BDAT
            case _, State.READY:
                return R.R503_NEED_MAIL
            case _, State.MAIL:
                return R.R554_NO_VALID_RECIPIENTS
        return R.R503_NEED_RCPT

    # --- the loop --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        client, conn, server = self.client, self.conn, self.server
        with mflog.context(session=client.session_id, peer=client.ip):
            try:
                refusal = server.admit(self)
                if refusal is not None:
                    return self.close(refusal)
                if server.draining:
                    return self.close(R.R421_SHUTTING_DOWN)
                conn.write(f"220 {self.settings.hostname} ESMTP Mailflow\r\n".encode())
                framer, limit = conn.framer, self.settings.max_auth_line
                while not conn.closed:
                    line = framer.line(limit)
                    if line is None:
                        await conn.more()
                        continue
                    await self.execute(line)
                    conn.deadline.begin()
                    if server.draining and not self.in_transaction and not conn.closed:
                        self.close(R.R421_SHUTTING_DOWN)
            except ConnectionLost:
                pass
            except Exception as exc:  # outside any command: the loop itself failed
                self.close(R.closing(R.to_reply(exc, ids.ref())))
            finally:
                conn.close()

    async def execute(self, line: bytes) -> None:
        if line is TOO_LONG:
            metrics.REJECTED.labels("command", "line_too_long").inc()
            return self.reply(R.R500_LINE_TOO_LONG)
        body = line[:-2]
        if not line.endswith(b"\r\n") or b"\r" in body:
            metrics.REJECTED.labels("command", "bare_lf").inc()
            return self.reply(R.R500_BARE_LF)
        if b"\0" in body:
            metrics.REJECTED.labels("command", "nul").inc()
            return self.reply(R.R500_NUL)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            metrics.REJECTED.labels("command", "encoding").inc()
            return self.reply(R.R500_BAD_ENCODING)
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if self.debug:
            log.debug(">>> %s", f"{verb} ****" if verb == "AUTH" and arg else text)
        spec = self.commands.get(verb)
        allowance = 0 if spec is None else spec.allowance
        if allowance is not None and len(line) > self.settings.max_command_line + allowance:
            metrics.REJECTED.labels("command", "line_too_long").inc()
            return self.reply(R.R500_LINE_TOO_LONG)
        if spec is None:
            metrics.REJECTED.labels("command", "unknown").inc()
            return self.reply(R.R500_UNKNOWN_COMMAND)
        arg = arg.strip(" ")
        try:
            if spec.no_args and arg:
                self.reply(R.R501_NO_ARGUMENTS)
            elif self.state in spec.allowed:
                await spec.handler(self, arg)
            elif spec.refused is not None:
                await spec.refused(self, arg)
            else:
                self.reply(self.out_of_sequence(verb))
        except ConnectionLost:
            raise
        except Exception as exc:
            reply = R.to_reply(exc, ids.ref())
            if self.state is State.DATA:  # inside message octets: what follows cannot be read as commands
                self.tx = None
                self.close(R.closing(reply))
            else:
                self.reply(reply)
