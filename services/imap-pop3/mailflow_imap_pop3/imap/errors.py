"""IMAP errors become tagged replies here and nowhere else (RFC 3501 §7.1, response codes of RFC 5530).

Syntax is BAD; a refusal (state, rights, no such mailbox) is NO with a code; a fault is NO
[UNAVAILABLE] when it is temporary (the store or NATS did not answer) and NO [SERVERBUG] with a ref
otherwise, the traceback going to the log under the same ref. A session the store no longer accepts
(SessionExpired) ends with BYE: the client logs in again. Client text never carries internals.
"""

from __future__ import annotations

import logging

from mailflow.errors import Conflict, Invalid, NotFound, ProtocolError, QuotaExceeded, ServiceUnavailable
from mailflow.store.client import SessionExpired
from mailflow_imap_pop3.imap.lexer import ParseError
from mailflow_imap_pop3.imap.responses import Reply

log = logging.getLogger(__name__)

R_UNAVAILABLE = Reply("NO", "Service temporarily unavailable, try again later", "UNAVAILABLE")
R_NONEXISTENT = Reply("NO", "No such mailbox", "NONEXISTENT")
R_TRYCREATE = Reply("NO", "No such mailbox, create it first", "TRYCREATE")
R_EXISTS = Reply("NO", "Mailbox already exists", "ALREADYEXISTS")
R_CANNOT = Reply("NO", "Operation not permitted on this mailbox", "CANNOT")
R_OVERQUOTA = Reply("NO", "Quota exceeded", "OVERQUOTA")
R_AUTH_FAILED = Reply("NO", "Authentication failed", "AUTHENTICATIONFAILED")
R_PRIVACY = Reply("NO", "Plaintext authentication is disabled without TLS, use STARTTLS", "PRIVACYREQUIRED")
R_THROTTLED = Reply("NO", "Too many failed logins from your address, try again later", "UNAVAILABLE")
R_READ_ONLY = Reply("NO", "Mailbox is read-only", "READ-ONLY")
R_EXPUNGED = Reply("NO", "Some of the requested messages no longer exist", "EXPUNGEISSUED")
R_INTERNAL = Reply("NO", "Internal error", "SERVERBUG")
R_EXPIRED = Reply("BYE", "Session expired, please log in again")
R_REVOKED = Reply("BYE", "Session ended: the account's password or status changed")


class ImapError(ProtocolError):
    """Raised by handlers; `.reply` is what the client gets."""


def no(text: str, code: str | None = None) -> ImapError:
    return ImapError(Reply("NO", text, code))


def bad(text: str) -> ImapError:
    return ImapError(Reply("BAD", text))


def to_reply(exc: BaseException, ref: str) -> Reply:
    match exc:
        case ProtocolError():
            return exc.reply
        case ParseError():
            return Reply(exc.status, exc.text, exc.code)
        case SessionExpired():
            return R_EXPIRED
        case NotFound():
            return R_NONEXISTENT
        case Conflict():
            return R_EXISTS
        case Invalid():
            return R_CANNOT.with_text(str(exc) or R_CANNOT.text) if _safe(str(exc)) else R_CANNOT
        case QuotaExceeded():
            return R_OVERQUOTA
        case ServiceUnavailable() | TimeoutError() | OSError() | PermissionError():
            log.warning("store unavailable: %s", exc, extra={"ref": ref})
            return R_UNAVAILABLE
        case _:
            log.error("internal error", exc_info=exc, extra={"ref": ref})
            return R_INTERNAL.with_text(f"Internal error, ref {ref}")


def _safe(text: str) -> bool:
    """The store's Invalid texts name the user's own input; anything long or odd stays out of replies."""
    return 0 < len(text) < 120 and text.isprintable() and "Traceback" not in text
