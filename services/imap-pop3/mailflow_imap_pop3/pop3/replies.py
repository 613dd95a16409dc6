"""Every POP3 reply text (RFC 1939, response codes of RFC 2449 §8 and RFC 3206), and `to_reply`.

`-ERR [AUTH]` is a credentials problem, `-ERR [SYS/TEMP]` ours and temporary, `-ERR [IN-USE]` the
maildrop lock. An unclassified exception is temporary and logged with a ref that the client also sees.
"""

from __future__ import annotations

import logging

from mailflow.errors import ProtocolError, ServiceUnavailable
from mailflow.store.client import SessionExpired

log = logging.getLogger(__name__)

OK = b"+OK"
GREETING = b"+OK Mailflow POP3 ready\r\n"
R_BYE = b"+OK Bye\r\n"
R_USER_OK = b"+OK Send your password\r\n"
R_LOGGED_IN = b"+OK Logged in\r\n"
R_NEED_USER = b"-ERR Send USER first\r\n"
R_AUTH_FAILED = b"-ERR [AUTH] Authentication failed\r\n"
R_PLAINTEXT = b"-ERR [AUTH] Plaintext authentication disallowed without TLS, use STLS\r\n"
R_THROTTLED = b"-ERR [SYS/TEMP] Too many failed logins from your address, try again later\r\n"
R_IN_USE = b"-ERR [IN-USE] Maildrop is locked by another session\r\n"
R_TEMP = b"-ERR [SYS/TEMP] Service temporarily unavailable, try again later\r\n"
R_UNKNOWN = b"-ERR Unknown command\r\n"
R_WRONG_STATE = b"-ERR Command not valid in this state\r\n"
R_BAD_ARGS = b"-ERR Invalid arguments\r\n"
R_NO_SUCH = b"-ERR No such message\r\n"
R_DELETED = b"-ERR Message is deleted\r\n"
R_TOO_LONG = b"-ERR Line too long\r\n"
R_TOO_MANY_ERRORS = b"-ERR Too many errors, closing the connection\r\n"
R_TIMEOUT = b"-ERR Autologout; idle for too long\r\n"
R_SHUTDOWN = b"-ERR [SYS/TEMP] Server shutting down, please reconnect\r\n"
R_TOO_MANY_CONNECTIONS = b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"
R_SERVER_BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
R_EVICTED = b"-ERR [SYS/TEMP] Too many connections, closing an idle one, try again later\r\n"
R_TLS_ACTIVE = b"-ERR TLS is already active\r\n"
R_NO_TLS = b"-ERR TLS is not available\r\n"
R_STLS = b"+OK Begin TLS negotiation\r\n"
R_AUTH_CANCELLED = b"-ERR Authentication cancelled\r\n"
R_BAD_SASL = b"-ERR [AUTH] Invalid SASL response\r\n"
R_MECHANISM = b"-ERR Unsupported authentication mechanism\r\n"
R_EXPIRED = b"-ERR [SYS/TEMP] Session expired, please log in again\r\n"
R_REVOKED = b"-ERR [AUTH] Session ended: the account's password or status changed\r\n"
R_UPDATE_FAILED = b"-ERR [SYS/TEMP] Some deleted messages were not removed, try again\r\n"


def scram_failed(code: str) -> bytes:
    return f"-ERR [AUTH] Authentication failed (SCRAM e={code})\r\n".encode()


def err(text: str) -> bytes:
    return b"-ERR " + text.encode() + b"\r\n"


def ok(text: str) -> bytes:
    return b"+OK " + text.encode() + b"\r\n"


def to_reply(exc: BaseException, ref: str) -> bytes:
    match exc:
        case ProtocolError():
            return exc.reply
        case SessionExpired():
            return R_EXPIRED
        case ServiceUnavailable() | TimeoutError() | OSError():
            log.warning("store unavailable: %s", exc, extra={"ref": ref})
            return R_TEMP
        case _:
            log.error("internal error", exc_info=exc, extra={"ref": ref})
            return f"-ERR [SYS/TEMP] Internal error, ref {ref}\r\n".encode()
