"""AUTH PLAIN, LOGIN (RFC 4954; the responses are decoded by mailflow.sasl, RFC 4616) and
SCRAM-SHA-256[-PLUS] (RFC 7677, mailflow.scram_auth; -PLUS only inside TLS). SCRAM's success data (the
server-final "v=") is a 334 challenge, answered by an empty line, then 235 (RFC 4954 §4).

Only on the submission listeners (and MX with MX_AUTH), after HELO/EHLO, outside a transaction, once
per session, and (by default) only inside TLS: in clear text it is 538 5.7.11 (RFC 8314). A response
that cannot be decoded is 501 (replies.to_reply); "*" cancels (501 5.7.0). A wrong password, an
unknown user, PLAIN or SCRAM asking to act as another user, a SCRAM proof, nonce or channel binding that
does not match is 535 5.7.8 after the throttle's delay (the client cannot tell which; SCRAM's error code
is in the text); a SCRAM message that cannot be used is 501 with its error code; `max_auth_failures` of them in a session close it with 421. A client
over the throttle's limit gets 454 4.7.0 without the store being asked (handler.handle_AUTH).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from mailflow import scram, scram_auth
from mailflow.errors import PermFailure
from mailflow.sasl import AuthzidRefused, decode_login, decode_plain
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.framing import TOO_LONG

if TYPE_CHECKING:
    from mailflow_smtp_ingress.session import Session

_USERNAME = base64.b64encode(b"Username:").decode()
_PASSWORD = base64.b64encode(b"Password:").decode()


async def response(s: Session, challenge: str) -> str:
    """The client's answer to a 334 challenge."""
    s.conn.write(f"334 {challenge}\r\n".encode())
    line = await s.conn.read_line(s.settings.max_auth_line)
    if line is TOO_LONG:
        raise PermFailure(R.R500_LINE_TOO_LONG, "AUTH line too long")
    text = line.rstrip(b"\r\n").decode("ascii", "replace")
    if text == "*":
        raise PermFailure(R.R501_AUTH_CANCELLED, "AUTH cancelled")
    return text


async def cmd_auth(s: Session, arg: str) -> None:
    c = s.client
    if c.principal is not None:
        return s.reply(R.R503_ALREADY_AUTH)
    if c.tls is None and s.settings.require_tls_for_auth:
        metrics.REJECTED.labels("auth", "tls_required").inc()
        return s.reply(R.R538_ENCRYPTION_REQUIRED)
    mechanism, _, initial = arg.partition(" ")
    mechanism = mechanism.upper()
    if mechanism == "PLAIN":
        try:
            username, password = decode_plain(initial.strip() or await response(s, ""))
        except AuthzidRefused:  # we let no user act as another
            metrics.AUTH.labels("PLAIN", "failed").inc()
            return failed(s, R.R535_AUTH_FAILED)
    elif mechanism == "LOGIN":
        username = decode_login(initial.strip() or await response(s, _USERNAME))
        password = decode_login(await response(s, _PASSWORD), "password")
    elif mechanism in scram_auth.mechanisms(bindings := s.conn.channel_bindings()):
        return await auth_scram(s, mechanism, initial.strip(), bindings)
    else:
        return s.reply(R.R504_AUTH_MECHANISM)
    result = await s.handler.handle_AUTH(c, mechanism, username, password)
    done(s, result)


async def auth_scram(s: Session, mechanism: str, initial: str, bindings: dict[str, bytes]) -> None:
    async def ask(challenge: bytes) -> bytes:
        return scram.decode_response(await response(s, base64.b64encode(challenge).decode()))

    exchange = scram.ServerExchange(mechanism, bindings, bool(bindings))
    first = scram.decode_response(initial) if initial else await ask(b"")
    done(s, await s.handler.handle_SCRAM(s.client, exchange, first, ask))


def done(s: Session, result: R.Reply) -> None:
    c = s.client
    if result.code == 535:
        return failed(s, result)
    s.reply(result)
    if c.principal is not None:  # no lifetime bound and no eviction from now on
        s.conn.deadline.authenticated(s.settings.idle_timeout)


def failed(s: Session, reply: R.Reply) -> None:
    s.auth_failures += 1
    s.reply(reply)
    if s.auth_failures >= s.settings.max_auth_failures and not s.conn.closed:
        s.close(R.R421_AUTH_FAILURES)
