"""EHLO HELO NOOP RSET VRFY EXPN HELP QUIT STARTTLS (RFC 5321 §4.1.1, RFC 1869, RFC 3207).

VRFY discloses nothing (252 2.5.2), EXPN is not implemented (502, like AUTH on a listener that does
not offer it). STARTTLS drops whatever the client sent before the handshake and forgets HELO and
AUTH (RFC 3207 §4.2); a failed handshake ends the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailflow import scram_auth
from mailflow_smtp_ingress import parser
from mailflow_smtp_ingress import replies as R

if TYPE_CHECKING:
    from mailflow_smtp_ingress.session import Session


def ehlo_lines(s: Session) -> list[str]:
    settings, client = s.settings, s.client
    lines = [
        f"{settings.hostname} Hello {client.helo}",
        "PIPELINING",
        f"SIZE {settings.max_message_bytes}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
    ]
    if s.server.tls_context is not None and client.tls is None:
        lines.append("STARTTLS")
    if client.tls is not None:  # RFC 8689: the parameter is only ever given over TLS
        lines.append("REQUIRETLS")
    if s.auth_listener and (client.tls is not None or not settings.require_tls_for_auth):
        lines.append(" ".join(["AUTH PLAIN LOGIN", *scram_auth.mechanisms(s.conn.channel_bindings())]))
    return lines


async def cmd_ehlo(s: Session, arg: str) -> None:
    if not arg:
        return s.reply(R.R501_EHLO_SYNTAX)
    s.client.helo, s.client.esmtp = parser.sanitize_helo(arg.split(" ")[0]), True
    s.greeted()
    s.reply(R.multiline(250, ehlo_lines(s)))


async def cmd_helo(s: Session, arg: str) -> None:
    if not arg:
        return s.reply(R.R501_HELO_SYNTAX)
    s.client.helo, s.client.esmtp = parser.sanitize_helo(arg.split(" ")[0]), False
    s.greeted()
    s.reply(R.Reply(250, "", s.settings.hostname))


async def cmd_noop(s: Session, arg: str) -> None:
    s.reply(R.R250_OK)


async def cmd_rset(s: Session, arg: str) -> None:
    s.end_transaction()
    s.reply(R.R250_OK)


async def cmd_vrfy(s: Session, arg: str) -> None:
    s.reply(R.R252_CANNOT_VRFY if arg else R.R501_SYNTAX)


async def cmd_not_implemented(s: Session, arg: str) -> None:
    s.reply(R.R502_NOT_IMPLEMENTED)


async def cmd_help(s: Session, arg: str) -> None:
    s.reply(R.R214_HELP)


async def cmd_quit(s: Session, arg: str) -> None:
    s.close(R.R221_BYE)


async def cmd_starttls(s: Session, arg: str) -> None:
    ctx = s.server.tls_context
    if s.client.tls is not None:
        return s.reply(R.R503_ALREADY_TLS)
    if ctx is None:
        return s.reply(R.R454_TLS_UNAVAILABLE)
    s.reply(R.R220_READY_TLS)
    await s.conn.start_tls(ctx, s.settings.tls_handshake_timeout)
    c = s.client
    c.tls = s.conn.tls
    c.helo, c.esmtp, c.principal = "", False, None  # RFC 3207 §4.2: forget what was said before
    s.restart()
