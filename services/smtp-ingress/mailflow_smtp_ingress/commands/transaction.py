"""MAIL RCPT DATA BDAT: one mail transaction (RFC 5321 §3.3, §4.1.1.2-4; RFC 1870 SIZE, RFC 6152
8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN parameters, RFC 3030 CHUNKING).

Syntax is parser.py's (a PermFailure carries its 501/553/555/552 reply); who may send to whom is the
handler's (handler.py). A transaction ends with the reply to DATA or BDAT LAST, whatever it is:
the text is checked (bare CR or LF, NUL, lines over 1000 octets: refused whole, never repaired), then
queued, and 250 comes only once it is durable. A BDAT that cannot be taken (out of sequence, over the
size, after a failed chunk) still has its octets read and dropped, so the stream stays in step; a
BDAT without a valid size closes the connection, since nothing after it can be found.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mailflow.errors import PermFailure
from mailflow_smtp_ingress import metrics, parser
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.handler import recipient
from mailflow_smtp_ingress.state import State, Transaction

if TYPE_CHECKING:
    from mailflow_smtp_ingress.session import Session

_REASONS = {552: "too_big", 500: "line_too_long"}


async def cmd_mail(s: Session, arg: str) -> None:
    c = s.client
    if c.submission and c.tls is None and s.settings.require_tls_for_auth:
        metrics.REJECTED.labels("mail", "tls_required").inc()
        return s.reply(R.R530_STARTTLS_FIRST)
    if arg[:5].upper() != "FROM:":
        return s.reply(R.R501_MAIL_SYNTAX)
    path, rest = parser.split_path(arg[5:])
    params = parser.mail_params(parser.parse_params(rest), s.settings.max_message_bytes)
    if (params.smtputf8 or params.body_8bit or params.requiretls) and not c.esmtp:
        return s.reply(R.R555_UNKNOWN_PARAMETER)
    if params.requiretls and c.tls is None:  # RFC 8689 §4.1: the session itself must be TLS
        metrics.REJECTED.labels("mail", "requiretls_without_tls").inc()
        return s.reply(R.R530_REQUIRETLS_WITHOUT_TLS)
    sender = None
    if path:
        try:
            sender = parser.parse_address(path, utf8=params.smtputf8)
        except PermFailure as exc:
            metrics.REJECTED.labels("mail", "syntax").inc()
            return s.reply(R.R501_BAD_SENDER if exc.reply.code == 501 else exc.reply)
    result = await s.handler.handle_MAIL(c, sender, params)
    if result.code == 250:
        s.begin(Transaction(mail_from=sender.address if sender else "", params=params))
    s.reply(result)


async def cmd_rcpt(s: Session, arg: str) -> None:
    tx = s.tx
    if arg[:3].upper() != "TO:":
        return s.reply(R.R501_RCPT_SYNTAX)
    if len(tx.rcpts) >= s.settings.max_recipients:
        metrics.REJECTED.labels("rcpt", "too_many").inc()
        return s.reply(R.R452_TOO_MANY_RECIPIENTS)
    path, rest = parser.split_path(arg[3:])
    params = parser.rcpt_params(parser.parse_params(rest))
    try:
        rcpt = parser.parse_address(path, utf8=tx.params.smtputf8, allow_postmaster=True)
    except PermFailure:
        metrics.REJECTED.labels("rcpt", "syntax").inc()
        raise
    result = await s.handler.handle_RCPT(s.client, tx, rcpt, params)
    if result.code == 250 and s.tx is tx:
        tx.rcpts.append(recipient(rcpt, params))
        s.state = State.RCPT
    s.reply(result)


async def cmd_data(s: Session, arg: str) -> None:
    tx = s.tx
    s.state = State.DATA
    s.reply(R.R354_GO_AHEAD)
    body, too_big = await s.conn.read_body(s.settings.max_message_bytes)
    started = time.perf_counter()
    if too_big:
        return refuse_text(s, R.R552_TOO_BIG)
    await finish(s, tx, body, started, dot_stuffed=True)


def bdat_size(s: Session, arg: str) -> tuple[int, bool] | None:
    """BDAT's size and LAST; None (after 501 and a closing 421) when the stream cannot be followed."""
    parts = arg.split()
    if (
        not parts
        or len(parts) > 2
        or not parts[0].isdigit()
        or len(parts[0]) > 12
        or (len(parts) == 2 and parts[1].upper() != "LAST")
    ):
        # Without a size we cannot find the next command in the stream: give up on the connection.
        s.reply(R.R501_BDAT_SYNTAX)
        s.close(R.R421_TOO_MANY_ERRORS.with_text("Cannot resynchronize after bad BDAT, closing"))
        return None
    return int(parts[0]), len(parts) == 2


async def cmd_bdat(s: Session, arg: str) -> None:
    parsed = bdat_size(s, arg)
    if parsed is None:
        return
    size, last = parsed
    tx = s.tx
    if not tx.rcpts:  # BDAT state after a chunk refused for want of recipients
        return await bdat_refused(s, size, last, R.R554_NO_VALID_RECIPIENTS)
    if tx.failed is not None:
        return await bdat_refused(s, size, last, R.R503_BDAT_FAILED)
    if tx.size + size > s.settings.max_message_bytes:
        return await bdat_refused(s, size, last, R.R552_TOO_BIG)
    s.state = State.DATA
    tx.chunks.append(await s.conn.read_chunk(size, keep=True))
    tx.size += size
    if not last:
        s.state = State.BDAT
        return s.reply(R.R250_CHUNK_OK.with_text(f"{size} octets received"))
    body = b"".join(tx.chunks)
    tx.chunks.clear()
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    await finish(s, tx, body, time.perf_counter(), dot_stuffed=False)


async def cmd_bdat_out_of_sequence(s: Session, arg: str) -> None:
    """BDAT where the state does not allow it: still read its octets, then say why not."""
    parsed = bdat_size(s, arg)
    if parsed is not None:
        await bdat_refused(s, *parsed, s.out_of_sequence("BDAT"))


async def bdat_refused(s: Session, size: int, last: bool, refusal: R.Reply) -> None:
    """Drop the chunk; inside a transaction the message has failed: the rest of it is refused too
    (503 5.5.1) and the transaction ends with its LAST chunk."""
    state = s.state
    s.state = State.DATA
    await s.conn.read_chunk(size, keep=False)
    s.state = state
    tx = s.tx
    if tx is not None:
        tx.failed = tx.failed or refusal
        tx.chunks.clear()
        if last:
            s.end_transaction()
        else:
            s.state = State.BDAT
    s.reply(refusal)


def refuse_text(s: Session, problem: R.Reply) -> None:
    s.end_transaction()
    metrics.REJECTED.labels("data", _REASONS.get(problem.code, "bad_text")).inc()
    s.reply(problem)


async def finish(s: Session, tx: Transaction, body: bytes, started: float, dot_stuffed: bool) -> None:
    """The end of DATA or BDAT LAST: check the text, queue it, answer; the transaction is over."""
    problem = parser.check_text(body, s.settings.max_text_line)
    if problem is not None:
        return refuse_text(s, problem)
    if dot_stuffed:
        body = parser.unstuff(body)
    s.end_transaction()
    s.reply(await s.handler.handle_DATA(s.client, tx, body, started))
