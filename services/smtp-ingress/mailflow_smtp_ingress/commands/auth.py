"""AUTH PLAIN and LOGIN (RFC 4954; the responses are decoded by mailflow.sasl, RFC 4616).

Only on the submission listeners (and MX with MX_AUTH), after HELO/EHLO, outside a transaction, once
per session, and (by default) only inside TLS: in clear text it is 538 5.7.11 (RFC 8314). A response
that cannot be decoded is 501 (replies.to_reply); "*" cancels (501 5.7.0). A wrong password, an
unknown user, or PLAIN asking to act as another user is 535 5.7.8 after the throttle's delay (the
client cannot tell which); `max_auth_failures` of them in a session close it with 421. A client
over the throttle's limit gets 454 4.7.0 without the store being asked (handler.handle_AUTH).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

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
    else:
        return s.reply(R.R504_AUTH_MECHANISM)
    result = await s.handler.handle_AUTH(c, mechanism, username, password)
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
