"""One SMTP connection: an asyncio.Protocol with its own buffer, and a task that runs the dialogue.

Why not aiosmtpd's SMTP class: with uvloop it spends ~0.6 ms of CPU per 4 KiB message doing nothing
(one StreamReader.readuntil and one awaited drain per line and per reply); this loop takes whole
commands and whole DATA bodies out of one buffer with bytes.find and writes pipelined replies in one
send. All of smtp-ingress's own work costs less than that (README.md, "Design"), which is what leaves
room for the rest of the stack on a 2-core machine. aiosmtpd still parses the PROXY header (proxy.py).

Reading: `data_received` appends to `buf` and wakes the task; the task takes complete lines (or
a whole DATA body up to `<CRLF>.<CRLF>`, or exactly N BDAT octets). Lines longer than the limit are
skipped to their end and answered 500 5.5.2; a line that ends in a bare LF, or has a bare CR or NUL
in it, is answered 500 5.5.2 and not executed. In DATA only `<CRLF>.<CRLF>` ends the message, and a
message with bare CR/LF or NUL is refused as a whole (no SMTP smuggling).
Writing: replies are collected and sent in one write when the task needs more input
(RFC 2920 pipelining); when the transport's write buffer is full the task stops reading commands.
Failures: a lost connection ends the task quietly; an unexpected exception is logged with a ref,
answered 421 4.3.0 with that ref, and closes only this connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailflow import ids
from mailflow import log as mflog
from mailflow import tls as mftls
from mailflow.errors import PermFailure
from mailflow_smtp_ingress import metrics, parser
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.handler import recipient
from mailflow_smtp_ingress.state import Client, Listener, Transaction

if TYPE_CHECKING:
    from mailflow_smtp_ingress.server import SmtpServer

log = logging.getLogger(__name__)

_TOO_LONG = b"\0too long"  # marker returned by _take_line for a line that exceeded the limit
_VERB_LIMITS_EXTRA = {"MAIL": 512 + 26 + 500 + 100, "RCPT": 512 + 500 + 40}  # RFC 1870/3461/4954 allowances
_USERNAME_B64 = base64.b64encode(b"Username:").decode()
_PASSWORD_B64 = base64.b64encode(b"Password:").decode()


class ConnectionLost(Exception):
    pass


class Session(asyncio.Protocol):
    def __init__(self, server: SmtpServer, listener: Listener):
        self.server = server
        self.settings = server.settings
        self.handler = server.handler
        self.listener = listener
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.waiter: asyncio.Future | None = None
        self.write_ready: asyncio.Future | None = None
        self.closed = False
        self.eof = False  # the client half-closed: finish what is buffered, answer, then close
        self.reading_paused = False
        self.discarding = False  # skipping the rest of an over-long line
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.client: Client | None = None
        self.tx: Transaction | None = None
        self.errors = 0
        self.auth_failures = 0
        self.counted_ip: str | None = None  # the address the connection limiter counted
        self.debug = log.isEnabledFor(logging.DEBUG)

    # --- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client = Client(secrets.token_hex(4), self.listener, str(peer[0]), int(peer[1]))
        if self.listener == "smtps":
            self.client.tls = mftls.describe(transport.get_extra_info("ssl_object"))
            metrics.TLS.labels("ok").inc()
        self.last_activity = self.loop.time()
        self.timer = self.loop.call_later(self.settings.idle_timeout, self._check_idle)
        self.server.session_started(self)
        self.task = self.loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.last_activity = self.loop.time()
        if len(self.buf) > self.server.buffer_limit and not self.reading_paused and self.transport:
            self.transport.pause_reading()
            self.reading_paused = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep our half open so the commands already received still get their replies (plain TCP;
        # a TLS transport cannot half-close and closes either way).
        return self.client is not None and self.client.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self._wake()
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)
        self.server.session_ended(self)

    def pause_writing(self) -> None:
        if self.write_ready is None or self.write_ready.done():
            self.write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    # --- plumbing -----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _check_idle(self) -> None:
        if self.closed:
            return
        timeout = self.settings.idle_timeout
        idle = self.loop.time() - self.last_activity
        if self.waiter is not None and idle >= timeout:  # only while waiting for the client
            log.info("idle timeout", extra={"session": self.client.session_id, "peer": self.client.ip})
            self.close(R.R421_IDLE_TIMEOUT)
            return
        self.timer = self.loop.call_later(
            max(timeout - idle, 0.05) if self.waiter else timeout, self._check_idle
        )

    def reply(self, r: R.Reply) -> None:
        self.out.append(r.wire)
        if self.debug:
            log.debug("<<< %s", str(r), extra={"session": self.client.session_id})
        if r.code >= 500:
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                metrics.REJECTED.labels("command", "too_many_errors").inc()
                self.close(R.R421_TOO_MANY_ERRORS)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def close(self, last: R.Reply | None = None) -> None:
        """Send what is pending (and `last`), then close. The task ends at its next read."""
        if last is not None:
            self.out.append(last.wire)
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self._wake()

    async def _more(self) -> None:
        """Wait for more input; pending replies go out first (one write per pipelined group)."""
        self.flush()
        if self.closed or self.eof:  # nothing more will come
            raise ConnectionLost
        if self.write_ready is not None and not self.write_ready.done():
            await self.write_ready
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.closed:
            raise ConnectionLost

    def _take_line(self, limit: int) -> bytes | None:
        """A complete line (with its terminator) from the buffer, _TOO_LONG, or None if incomplete."""
        buf = self.buf
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > limit:
                self.discarding = True
                buf.clear()
            return None
        line = bytes(buf[: i + 1])
        del buf[: i + 1]
        if self.discarding or len(line) > limit:
            self.discarding = False
            return _TOO_LONG
        return line

    async def read_line(self, limit: int) -> bytes:
        while True:
            line = self._take_line(limit)
            if line is not None:
                return line
            await self._more()

    # --- the dialogue -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        client = self.client
        with mflog.context(session=client.session_id, peer=client.ip):
            try:
                if self.settings.proxy_protocol and not await self.server.read_proxy(self):
                    return
                refusal = self.server.admit(self)
                if refusal is not None:
                    self.close(refusal)
                    return
                if self.server.draining:
                    self.close(R.R421_SHUTTING_DOWN)
                    return
                self.out.append(f"220 {self.settings.hostname} ESMTP Mailflow\r\n".encode())
                limit = self.settings.max_auth_line
                while not self.closed:
                    line = self._take_line(limit)
                    if line is None:
                        await self._more()
                        continue
                    await self.command(line)
                    if self.server.draining and self.tx is None and not self.closed:
                        self.close(R.R421_SHUTTING_DOWN)
            except ConnectionLost:
                pass
            except Exception as exc:
                ref = ids.ref()
                metrics.INTERNAL_ERRORS.inc()
                log.error("session failed", exc_info=exc, extra={"ref": ref})
                self.close(R.Reply(421, "4.3.0", f"Internal error, closing connection (ref {ref})"))
            finally:
                self.flush()
                if not self.closed and self.transport is not None:
                    self.transport.close()
                self.closed = True

    async def command(self, line: bytes) -> None:
        if line is _TOO_LONG:
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
            shown = f"{verb} ****" if verb == "AUTH" and arg else text
            log.debug(">>> %s", shown)
        if len(line) > self.settings.max_command_line + _VERB_LIMITS_EXTRA.get(verb, 0) and verb != "AUTH":
            metrics.REJECTED.labels("command", "line_too_long").inc()
            return self.reply(R.R500_LINE_TOO_LONG)
        handler = COMMANDS.get(verb)
        if handler is None:
            metrics.REJECTED.labels("command", "unknown").inc()
            return self.reply(R.R500_UNKNOWN_COMMAND)
        try:
            await handler(self, arg.strip(" "))
        except PermFailure as exc:
            self.reply(exc.reply)

    # --- EHLO HELO NOOP RSET VRFY HELP QUIT -------------------------------------------------------------------

    def ehlo_lines(self) -> list[str]:
        s, client = self.settings, self.client
        lines = [
            f"{s.hostname} Hello {client.helo}",
            "PIPELINING",
            f"SIZE {s.max_message_bytes}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
        if self.server.tls_context is not None and client.tls is None:
            lines.append("STARTTLS")
        if self.auth_offered():
            lines.append("AUTH PLAIN LOGIN")
        return lines

    def auth_offered(self) -> bool:
        c = self.client
        if not (c.submission or self.settings.mx_auth):
            return False
        return c.tls is not None or not self.settings.require_tls_for_auth

    async def cmd_ehlo(self, arg: str) -> None:
        if not arg:
            return self.reply(R.R501_EHLO_SYNTAX)
        self.client.helo, self.client.esmtp, self.tx = parser.sanitize_helo(arg.split(" ")[0]), True, None
        self.reply(R.multiline(250, self.ehlo_lines()))

    async def cmd_helo(self, arg: str) -> None:
        if not arg:
            return self.reply(R.R501_HELO_SYNTAX)
        self.client.helo, self.client.esmtp, self.tx = parser.sanitize_helo(arg.split(" ")[0]), False, None
        self.reply(R.Reply(250, "", self.settings.hostname))

    async def cmd_noop(self, arg: str) -> None:
        self.reply(R.R250_OK)

    async def cmd_rset(self, arg: str) -> None:
        if arg:
            return self.reply(R.R501_NO_ARGUMENTS)
        self.tx = None
        self.reply(R.R250_OK)

    async def cmd_vrfy(self, arg: str) -> None:
        if not arg:
            return self.reply(R.R501_SYNTAX)
        self.reply(R.R252_CANNOT_VRFY)

    async def cmd_expn(self, arg: str) -> None:
        self.reply(R.R502_NOT_IMPLEMENTED)

    async def cmd_help(self, arg: str) -> None:
        self.reply(R.R214_HELP)

    async def cmd_quit(self, arg: str) -> None:
        self.close(R.R221_BYE)

    # --- STARTTLS (RFC 3207) --------------------------------------------------------------------------------

    async def cmd_starttls(self, arg: str) -> None:
        ctx = self.server.tls_context
        if arg:
            return self.reply(R.R501_NO_ARGUMENTS)
        if self.client.tls is not None:
            return self.reply(R.R503_ALREADY_TLS)
        if ctx is None:
            return self.reply(R.R454_TLS_UNAVAILABLE)
        self.reply(R.R220_READY_TLS)
        self.flush()
        # RFC 3207 §4.2: nothing the client sent before the handshake counts (CVE-2011-0411 class).
        self.buf.clear()
        self.discarding = False
        try:
            # Awaited directly, not through wait_for: a task would start a loop iteration later, and the
            # ClientHello arriving meanwhile would land in our plaintext buffer (and the handshake hang).
            transport = await self.loop.start_tls(
                self.transport,
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.settings.tls_handshake_timeout,
            )
        except Exception as exc:
            metrics.TLS.labels("failed").inc()
            log.info("TLS handshake failed: %s", exc)
            if self.transport is not None:
                self.transport.abort()
            self.closed = True
            raise ConnectionLost from exc
        metrics.TLS.labels("ok").inc()
        self.transport = transport
        c = self.client
        c.tls = mftls.describe(transport.get_extra_info("ssl_object"))
        # RFC 3207 §4.2: forget everything the client said before the handshake.
        c.helo, c.esmtp, c.principal, self.tx = "", False, None, None

    # --- AUTH (RFC 4954: PLAIN RFC 4616, LOGIN) --------------------------------------------------------------

    async def _auth_response(self, challenge: str) -> str:
        self.out.append(f"334 {challenge}\r\n".encode())
        line = await self.read_line(self.settings.max_auth_line)
        if line is _TOO_LONG:
            raise PermFailure(R.R500_LINE_TOO_LONG, "AUTH line too long")
        text = line.rstrip(b"\r\n").decode("ascii", "replace")
        if text == "*":
            raise PermFailure(R.R501_AUTH_CANCELLED, "AUTH cancelled")
        return text

    @staticmethod
    def _b64(text: str) -> bytes:
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise PermFailure(R.R501_AUTH_BAD_BASE64, "bad base64") from None

    async def cmd_auth(self, arg: str) -> None:
        c = self.client
        if not (c.submission or self.settings.mx_auth):
            return self.reply(R.R502_NOT_IMPLEMENTED)
        if not c.helo:
            return self.reply(R.R503_HELO_FIRST)
        if c.principal is not None:
            return self.reply(R.R503_ALREADY_AUTH)
        if self.tx is not None:
            return self.reply(R.R503_AUTH_IN_TRANSACTION)
        if c.tls is None and self.settings.require_tls_for_auth:
            metrics.REJECTED.labels("auth", "tls_required").inc()
            return self.reply(R.R538_ENCRYPTION_REQUIRED)
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            decoded = self._b64(initial.strip() or await self._auth_response(""))
            parts = decoded.split(b"\0")
            if len(parts) != 3:
                return self.reply(
                    R.R501_AUTH_BAD_BASE64.with_text("PLAIN needs authzid NUL authcid NUL password")
                )
            authzid, username, password = (p.decode("utf-8", "replace") for p in parts)
            if authzid and authzid != username:  # we do not let one user act as another
                metrics.AUTH.labels("PLAIN", "failed").inc()
                return self._auth_failed(R.R535_AUTH_FAILED)
        elif mechanism == "LOGIN":
            user_b64 = initial.strip() or await self._auth_response(_USERNAME_B64)
            username = self._b64(user_b64).decode("utf-8", "replace")
            password = self._b64(await self._auth_response(_PASSWORD_B64)).decode("utf-8", "replace")
        else:
            return self.reply(R.R504_AUTH_MECHANISM)
        result = await self.handler.handle_AUTH(c, mechanism, username, password)
        if result.code == 535:
            return self._auth_failed(result)
        self.reply(result)

    def _auth_failed(self, reply: R.Reply) -> None:
        self.auth_failures += 1
        self.reply(reply)
        if self.auth_failures >= self.settings.max_auth_failures and not self.closed:
            self.close(R.R421_AUTH_FAILURES)

    # --- MAIL RCPT -----------------------------------------------------------------------------------------

    async def cmd_mail(self, arg: str) -> None:
        c = self.client
        if not c.helo:
            return self.reply(R.R503_HELO_FIRST)
        if self.tx is not None:
            return self.reply(R.R503_NESTED_MAIL)
        if c.submission and c.tls is None and self.settings.require_tls_for_auth:
            metrics.REJECTED.labels("mail", "tls_required").inc()
            return self.reply(R.R530_STARTTLS_FIRST)
        if arg[:5].upper() != "FROM:":
            return self.reply(R.R501_MAIL_SYNTAX)
        path, rest = parser.split_path(arg[5:])
        params = parser.mail_params(parser.parse_params(rest), self.settings.max_message_bytes)
        if (params.smtputf8 or params.body_8bit) and not c.esmtp:
            return self.reply(R.R555_UNKNOWN_PARAMETER)
        sender = None
        if path:
            try:
                sender = parser.parse_address(path, utf8=params.smtputf8)
            except PermFailure as exc:
                metrics.REJECTED.labels("mail", "syntax").inc()
                reply = exc.reply
                return self.reply(R.R501_BAD_SENDER if reply.code == 501 else reply)
        result = await self.handler.handle_MAIL(c, sender, params)
        if result.code == 250:
            self.tx = Transaction(mail_from=sender.address if sender else "", params=params)
        self.reply(result)

    async def cmd_rcpt(self, arg: str) -> None:
        tx = self.tx
        if tx is None:
            return self.reply(R.R503_NEED_MAIL)
        if tx.mode:
            return self.reply(R.R503_MIXED_DATA_BDAT)
        if arg[:3].upper() != "TO:":
            return self.reply(R.R501_RCPT_SYNTAX)
        if len(tx.rcpts) >= self.settings.max_recipients:
            metrics.REJECTED.labels("rcpt", "too_many").inc()
            return self.reply(R.R452_TOO_MANY_RECIPIENTS)
        path, rest = parser.split_path(arg[3:])
        params = parser.rcpt_params(parser.parse_params(rest))
        try:
            rcpt = parser.parse_address(path, utf8=tx.params.smtputf8, allow_postmaster=True)
        except PermFailure:
            metrics.REJECTED.labels("rcpt", "syntax").inc()
            raise
        result = await self.handler.handle_RCPT(self.client, tx, rcpt, params)
        if result.code == 250 and self.tx is tx:
            tx.rcpts.append(recipient(rcpt, params))
        self.reply(result)

    # --- DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030) -------------------------------------------------------

    def _check_ready_for_data(self, mode: str) -> R.Reply | None:
        tx = self.tx
        if tx is None:
            return R.R503_NEED_MAIL if self.client.helo else R.R503_HELO_FIRST
        if tx.mode and tx.mode != mode:
            return R.R503_MIXED_DATA_BDAT
        if not tx.rcpts:
            return R.R554_NO_VALID_RECIPIENTS
        return None

    async def cmd_data(self, arg: str) -> None:
        if arg:
            return self.reply(R.R501_NO_ARGUMENTS)
        refusal = self._check_ready_for_data("data")
        if refusal is not None:
            return self.reply(refusal)
        tx = self.tx
        tx.mode = "data"
        self.reply(R.R354_GO_AHEAD)
        body, problem = await self._read_data()
        started = time.perf_counter()
        await self._finish(tx, body, problem, started, dot_stuffed=True)

    async def _read_data(self) -> tuple[bytes, R.Reply | None]:
        """Everything up to <CRLF>.<CRLF> (the first CRLF is the last line's own). Over the size limit
        the data is still read to its end, but dropped as it comes."""
        limit = self.settings.max_message_bytes
        buf = self.buf
        scanned = 0
        overflow = False
        while True:
            if scanned == 0 and not overflow and len(buf) >= 3 and buf.startswith(b".\r\n"):
                del buf[:3]
                return b"", None
            if scanned == 0 and not overflow and len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                await self._more()
                continue
            end = buf.find(b"\r\n.\r\n", max(scanned - 4, 0))
            if end >= 0:
                body = b"" if overflow else bytes(buf[: end + 2])
                del buf[: end + 5]
                if overflow or len(body) > limit:
                    return b"", R.R552_TOO_BIG
                return body, None
            scanned = len(buf)
            if scanned > limit + 4:
                overflow = True
                del buf[:-4]
                scanned = 4
            await self._more()

    async def _read_exact(self, n: int, keep: bool) -> bytes:
        """Exactly n octets (BDAT). With keep=False they are dropped as they arrive."""
        buf = self.buf
        if not keep:
            while n > 0:
                take = min(n, len(buf))
                del buf[:take]
                n -= take
                if n:
                    await self._more()
            return b""
        while len(buf) < n:
            await self._more()
        data = bytes(buf[:n])
        del buf[:n]
        return data

    async def cmd_bdat(self, arg: str) -> None:
        parts = arg.split()
        if not parts or len(parts) > 2 or not parts[0].isdigit() or len(parts[0]) > 12:
            # Without a size we cannot find the next command in the stream: give up on the connection.
            self.reply(R.R501_BDAT_SYNTAX)
            return self.close(
                R.R421_TOO_MANY_ERRORS.with_text("Cannot resynchronize after bad BDAT, closing")
            )
        if len(parts) == 2 and parts[1].upper() != "LAST":
            self.reply(R.R501_BDAT_SYNTAX)
            return self.close(
                R.R421_TOO_MANY_ERRORS.with_text("Cannot resynchronize after bad BDAT, closing")
            )
        size, last = int(parts[0]), len(parts) == 2
        refusal = self._check_ready_for_data("bdat")
        tx = self.tx
        if refusal is None and tx.failed is not None:
            refusal = R.R503_BDAT_FAILED
        if refusal is None and tx.size + size > self.settings.max_message_bytes:
            refusal = R.R552_TOO_BIG
        if refusal is not None:
            await self._read_exact(size, keep=False)
            if tx is not None:
                tx.mode = "bdat"
                tx.failed = tx.failed or refusal
                tx.chunks.clear()
                if last:
                    self.tx = None
            return self.reply(refusal)
        tx.mode = "bdat"
        tx.chunks.append(await self._read_exact(size, keep=True))
        tx.size += size
        if not last:
            return self.reply(R.R250_CHUNK_OK.with_text(f"{size} octets received"))
        body = b"".join(tx.chunks)
        tx.chunks.clear()
        if body and not body.endswith(b"\r\n"):
            body += b"\r\n"
        await self._finish(tx, body, None, time.perf_counter(), dot_stuffed=False)

    async def _finish(
        self, tx: Transaction, body: bytes, problem: R.Reply | None, started: float, dot_stuffed: bool
    ) -> None:
        """The end of DATA or BDAT LAST: check the text, queue it, answer; the transaction is over."""
        self.tx = None
        if problem is None:
            problem = parser.check_text(body, self.settings.max_text_line)
        if problem is not None:
            reason = {552: "too_big", 500: "line_too_long"}.get(problem.code, "bad_text")
            metrics.REJECTED.labels("data", reason).inc()
            return self.reply(problem)
        if dot_stuffed:
            body = parser.unstuff(body)
        self.reply(await self.handler.handle_DATA(self.client, tx, body, started))


Command = Callable[[Session, str], Awaitable[None]]
COMMANDS: dict[str, Command] = {
    "EHLO": Session.cmd_ehlo,
    "HELO": Session.cmd_helo,
    "MAIL": Session.cmd_mail,
    "RCPT": Session.cmd_rcpt,
    "DATA": Session.cmd_data,
    "BDAT": Session.cmd_bdat,
    "RSET": Session.cmd_rset,
    "NOOP": Session.cmd_noop,
    "VRFY": Session.cmd_vrfy,
    "EXPN": Session.cmd_expn,
    "HELP": Session.cmd_help,
    "QUIT": Session.cmd_quit,
    "STARTTLS": Session.cmd_starttls,
    "AUTH": Session.cmd_auth,
}
