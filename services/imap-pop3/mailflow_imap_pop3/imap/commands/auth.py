"""Any-state and login commands: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, AUTHENTICATE, LOGIN, ENABLE,
NAMESPACE, COMPRESS (RFC 3501 §6.1-6.2, RFC 2971, RFC 4959, RFC 5161, RFC 2342, RFC 4978).

AUTHENTICATE takes PLAIN (RFC 4616) and SCRAM-SHA-256[-PLUS] (RFC 7677, mailflow.scram_auth), each
with an initial response (SASL-IR) or after an empty "+ " continuation. SCRAM's success data (the
server-final "v=") is a last continuation, answered by an empty line, then OK (RFC 3501 §6.2.2).
A SCRAM message that cannot be used is BAD with the SCRAM error; a failed proof, nonce or channel
binding is NO [AUTHENTICATIONFAILED] with it, and counts in the throttle like a wrong password.

A wrong password, an unknown user and a throttled address all end in NO without saying which user
exists. Plaintext credentials without TLS are refused (NO [PRIVACYREQUIRED]) unless the client is on
loopback or the settings allow them; LOGINDISABLED is advertised then. A store that does not answer
is NO [UNAVAILABLE] (via errors.to_reply), never "authentication failed".
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mailflow import scram, scram_auth
from mailflow.sasl import SaslError
from mailflow.store.api import Principal
from mailflow_imap_pop3.auth import LoginFailed, Throttled, counted
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Authenticate, Command, Compress, Enable, Id, Login

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

log = logging.getLogger(__name__)


async def cmd_capability(s: Session, cmd: Command) -> Reply | None:
    s.untagged(f"CAPABILITY {s.capabilities()}")
    return None


async def cmd_noop(s: Session, cmd: Command) -> Reply | None:
    return None  # the session's sync after the command is the point of NOOP


async def cmd_logout(s: Session, cmd: Command) -> Reply | None:
    from mailflow_imap_pop3.imap.session import State

    s.untagged("BYE Logging out")
    s.state = State.LOGOUT
    return Reply("OK", "LOGOUT completed")


async def cmd_id(s: Session, cmd: Command) -> Reply | None:
    args: Id = cmd.args
    if args.params:
        s.client_id = " ".join(f"{k}={v}" for k, v in args.params)[:200]
        log.info("client id", extra={"client": s.client_id})
    s.write(b'* ID ("name" "Mailflow" "vendor" "Mailflow")\r\n')
    return None


async def cmd_starttls(s: Session, cmd: Command) -> Reply | None:
    if s.tls_active:
        return Reply("BAD", "TLS is already active")
    if s.ctx.tls is None:
        return Reply("NO", "TLS is not available")
    # RFC 3501 §6.2.1 / RFC 7817: anything the client pipelined after STARTTLS in the clear is dropped,
    # from the framer here and from the stream at the switch.
    dropped = s.framer.discard()
    dropped += await s.conn.start_tls(
        s.ctx.tls, rsp.tagged(cmd.tag, "OK", "Begin TLS negotiation now"), s.ctx.settings.tls_handshake_timeout
    )
    if dropped:
        log.warning("plaintext pipelined after STARTTLS was discarded", extra={"octets": dropped})
    return rsp.ANSWERED


async def cmd_compress(s: Session, cmd: Command) -> Reply | None:
    """RFC 4978: DEFLATE both ways from the octet after our tagged OK. The client may send nothing after
    COMPRESS until it has our answer (§3), so anything it did is dropped, as after STARTTLS."""
    args: Compress = cmd.args
    if args.mechanism != "DEFLATE":
        return Reply("BAD", "Unknown compression mechanism (DEFLATE is the one offered)")
    if s.conn.compressed:
        return Reply("NO", "DEFLATE is already active", "COMPRESSIONACTIVE")
    dropped = s.framer.discard()
    dropped += await s.conn.start_compress(rsp.tagged(cmd.tag, "OK", "DEFLATE active"))
    if dropped:
        log.warning("input pipelined after COMPRESS was discarded", extra={"octets": dropped})
    return rsp.ANSWERED


async def login(s: Session, authenticating: Awaitable[Principal]) -> Reply:
    """The answer to LOGIN, AUTHENTICATE PLAIN or SCRAM: `authenticating` counted (auth.counted),
    then worded for IMAP."""
    try:
        principal = await counted("imap", s.conn.ip, authenticating)
    except Throttled:
        return errors.R_THROTTLED
    except LoginFailed as exc:
        if exc.scram_error is None:
            return errors.R_AUTH_FAILED
        return Reply("NO", f"Authentication failed (SCRAM e={exc.scram_error})", "AUTHENTICATIONFAILED")
    except scram_auth.Cancelled:
        return Reply("BAD", "Authentication cancelled")
    except scram.ScramError as exc:
        return Reply("BAD", f"Invalid SCRAM message: {exc}")
    except SaslError as exc:
        return Reply("BAD", f"Invalid SASL response: {exc}")
    await s.logged_in(principal)
    return Reply("OK", "Logged in", f"CAPABILITY {s.capabilities()}")


async def cmd_login(s: Session, cmd: Command) -> Reply | None:
    if not s.plaintext_allowed():
        return errors.R_PRIVACY
    args: Login = cmd.args
    return await login(s, s.ctx.auth.login(args.user, args.password, s.conn.ip, "imap"))


async def cmd_authenticate(s: Session, cmd: Command) -> Reply | None:
    args: Authenticate = cmd.args
    if args.mechanism not in s.mechanisms():
        return Reply("NO", f"Unsupported authentication mechanism {args.mechanism[:20]}", "CANNOT")
    if not s.plaintext_allowed():
        return errors.R_PRIVACY
    if args.mechanism != "PLAIN":
        return await authenticate_scram(s, args)
    response = args.initial
    if response is None:
        s.write(b"+ \r\n")
        response = await s.read_line()
        if response is None:
            return Reply("BAD", "Authentication response missing or too long")
    if response.strip() == b"*":
        return Reply("BAD", "Authentication cancelled")
    return await login(s, s.ctx.auth.plain(response, s.conn.ip, "imap"))


async def authenticate_scram(s: Session, args: Authenticate) -> Reply:
    async def ask(challenge: bytes) -> bytes:
        s.write(b"+ " + base64.b64encode(challenge) + b"\r\n")
        line = await s.read_line()
        if line is None:
            raise SaslError("Authentication response missing or too long")
        if line.strip() == b"*":
            raise scram_auth.Cancelled("Authentication cancelled")
        return scram.decode_response(line)

    exchange = scram.ServerExchange(args.mechanism, s.conn.channel_bindings(), scram.MECHANISM_PLUS in s.mechanisms())

    async def authenticating() -> Principal:
        first = scram.decode_response(args.initial) if args.initial is not None else await ask(b"")
        return await s.ctx.auth.scram(exchange, first, ask, s.conn.ip, "imap")

    return await login(s, authenticating())


_ENABLED_NAMES = {"IMAP4REV2": "IMAP4rev2"}  # as the capability is spelled


async def cmd_enable(s: Session, cmd: Command) -> Reply | None:
    args: Enable = cmd.args
    enabled = []
    for cap in args.capabilities:  # upper case; unknown ones are ignored (RFC 5161 §3.1)
        if cap in s.enabled:
            continue
        if cap in ("CONDSTORE", "QRESYNC"):
            s.condstore = True  # QRESYNC implies CONDSTORE (RFC 7162 §3.2.3)
            s.qresync = s.qresync or cap == "QRESYNC"
        elif cap == "IMAP4REV2":  # RFC 9051 §6.3.1: this session only, from the next command on
            s.rev2 = True
        else:
            continue
        s.enabled.add(cap)
        enabled.append(_ENABLED_NAMES.get(cap, cap))
    s.untagged("ENABLED" + "".join(" " + c for c in enabled))
    return None


async def cmd_namespace(s: Session, cmd: Command) -> Reply | None:
    s.write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return None
