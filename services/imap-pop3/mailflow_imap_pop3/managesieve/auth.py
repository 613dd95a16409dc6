"""Session commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE, UNAUTHENTICATE (RFC 5804 §2.1-2.4,
§2.11-2.12, §2.14).

Logins go through the same Authenticator as IMAP and POP3 (the same throttle per client, the same
cache): PLAIN decoded by mailflow.sasl, SCRAM-SHA-256[-PLUS] by mailflow.scram_auth (-PLUS only over
TLS). Challenges go out as strings of base64 and answers come back as strings ("*" cancels); SCRAM's
server-final message goes in the OK's response code, `OK (SASL "<base64>")` (§2.1), not as one more
challenge. A wrong password, an unknown user and a throttled
address all end in NO without saying which user exists; a store that does not answer is NO (TRYLATER).
A password without TLS is refused (NO (ENCRYPT-NEEDED)) unless the client is on loopback or the settings
allow it; SASL then lists no mechanism. After STARTTLS the capabilities are sent again (§2.2).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from mailflow import scram, scram_auth
from mailflow.sasl import SaslError
from mailflow.store.api import Principal
from mailflow_imap_pop3.auth import LoginFailed, Throttled, counted
from mailflow_imap_pop3.managesieve import responses as rsp
from mailflow_imap_pop3.managesieve.parser import Command
from mailflow_imap_pop3.managesieve.responses import Reply

if TYPE_CHECKING:
    from mailflow_imap_pop3.managesieve.session import Session

log = logging.getLogger(__name__)


async def cmd_capability(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(0)
    s.write(s.capabilities())
    return None


async def cmd_noop(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(0, 1)
    if cmd.args:
        tag = cmd.string(0, "a tag")
        return Reply("OK", "Done", "TAG " + rsp.string(tag).decode("utf-8"))
    return Reply("OK", "Done")


async def cmd_logout(s: Session, cmd: Command) -> Reply | None:
    from mailflow_imap_pop3.managesieve.session import State

    s.state = State.LOGOUT
    return Reply("OK", "Logout completed")


async def cmd_starttls(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(0)
    if s.tls_active:
        return Reply("NO", "TLS is already active")
    if s.ctx.tls is None:
        return Reply("NO", "TLS is not available")
    dropped = s.framer.discard()
    dropped += await s.conn.start_tls(
        s.ctx.tls, Reply("OK", "Begin TLS negotiation now").line(), s.ctx.settings.tls_handshake_timeout
    )
    if dropped:
        log.warning("plaintext pipelined after STARTTLS was discarded", extra={"octets": dropped})
    s.write(s.capabilities() + Reply("OK", "TLS active").line())
    return rsp.ANSWERED


async def cmd_authenticate(s: Session, cmd: Command) -> Reply | None:
    from mailflow_imap_pop3.managesieve.session import State

    cmd.arity(1, 2)
    mechanism = cmd.string(0, "a mechanism").upper()
    if mechanism not in s.mechanisms():
        return Reply("NO", f"Unsupported mechanism {mechanism[:20]}")
    if not s.plaintext_allowed():
        return rsp.R_PRIVACY
    if mechanism != "PLAIN":
        return await authenticate_scram(s, mechanism, cmd.string(1, "the initial response") if len(cmd.args) == 2 else None)
    if len(cmd.args) == 2:
        response = cmd.string(1, "the initial response")
    else:
        s.write(rsp.string("") + b"\r\n")  # the empty challenge of PLAIN (§2.1)
        answer = await s.read_command()
        if s.state == State.LOGOUT:
            return rsp.ANSWERED  # the session said BYE
        if answer is None or answer.name or len(answer.args) != 1:
            return Reply("NO", "Authentication response missing or not a string")
        response = answer.string(0, "the response")
    if response == "*":
        return Reply("NO", "Authentication cancelled")
    return await login(s, s.ctx.auth.plain(response, s.conn.ip, "managesieve"))


async def login(s: Session, authenticating: Awaitable[Principal], final: Sequence[bytes] = ()) -> Reply:
    """The answer to AUTHENTICATE: `authenticating` counted (auth.counted), then worded for ManageSieve;
    `final` (filled while authenticating: SCRAM's server-final message) goes in the OK (SASL ...) (RFC
    5804 §2.1)."""
    try:
        principal = await counted("managesieve", s.conn.ip, authenticating)
    except _Gone:
        return rsp.ANSWERED
    except Throttled:
        return rsp.R_THROTTLED
    except LoginFailed as exc:
        if exc.scram_error is None:
            return rsp.R_AUTH_FAILED
        return Reply("NO", f"Authentication failed (SCRAM e={exc.scram_error})")
    except scram_auth.Cancelled:
        return Reply("NO", "Authentication cancelled")
    except SaslError as exc:  # ScramError too
        return Reply("NO", f"Invalid SASL response: {exc}")
    await s.logged_in(principal)
    return Reply("OK", "Logged in", "SASL " + rsp.string(base64.b64encode(final[0])).decode() if final else "")


class _Gone(scram_auth.Cancelled):
    """The session said BYE while waiting for an answer (a literal too big): the client gave up."""

    def __init__(self) -> None:
        super().__init__("the session ended")


async def authenticate_scram(s: Session, mechanism: str, initial: str | None) -> Reply:
    from mailflow_imap_pop3.managesieve.session import State

    final: list[bytes] = []

    async def ask(challenge: bytes) -> bytes:
        if challenge.startswith(b"v="):  # the server-final message: it goes in the OK (SASL ...)
            final.append(challenge)
            return b""
        s.write(rsp.string(base64.b64encode(challenge)) + b"\r\n")
        answer = await s.read_command()
        if s.state == State.LOGOUT:
            raise _Gone
        if answer is None or answer.name or len(answer.args) != 1:
            raise SaslError("Authentication response missing or not a string")
        text = answer.string(0, "the response")
        if text == "*":
            raise scram_auth.Cancelled("Authentication cancelled")
        return scram.decode_response(text)

    exchange = scram.ServerExchange(mechanism, s.conn.channel_bindings(), scram.MECHANISM_PLUS in s.mechanisms())

    async def authenticating() -> Principal:
        first = scram.decode_response(initial) if initial is not None else await ask(b"")
        return await s.ctx.auth.scram(exchange, first, ask, s.conn.ip, "managesieve")

    return await login(s, authenticating(), final)


async def cmd_unauthenticate(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(0)
    s.logged_out()
    return Reply("OK", "Unauthenticated")
