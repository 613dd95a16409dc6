"""Errors that carry their own reply. Each protocol maps an exception to a reply in exactly one place.

`ProtocolError.reply` is what the client sees, `.reason` what the log says. An error that is not a
`ProtocolError` is unclassified and therefore temporary: a wrong 5xx loses mail, a wrong 4xx only
delays it. Client text never carries tracebacks, host names, SQL or configuration.
"""

from __future__ import annotations


class ProtocolError(Exception):
    def __init__(self, reply, reason: str = ""):
        super().__init__(reason or str(reply))
        self.reply = reply
        self.reason = reason or str(reply)


class TempFailure(ProtocolError):
    """4xx in SMTP, NO [UNAVAILABLE] in IMAP, -ERR [SYS/TEMP] in POP3, nak(delay) in a worker."""


class PermFailure(ProtocolError):
    """5xx in SMTP, NO in IMAP, -ERR in POP3, a bounce in a worker."""


class ServiceUnavailable(Exception):
    """A dependency (NATS, mailbox-store, the database) did not answer. Always temporary."""


class InsufficientStorage(ServiceUnavailable):
    """The server's own disk is full (ENOSPC, a database that cannot grow): not a user's quota. Temporary:
    delivery defers with 452 4.3.1 (RFC 3463 §3.4, mail system full) and retries once space is back."""


class NotFound(Exception):
    """The thing asked for does not exist (for this user). Never says whether it exists for another."""


class Conflict(Exception):
    """The thing to create exists already, or a lock is held (POP3 maildrop)."""


class QuotaExceeded(Exception):
    """The user's storage quota would be exceeded. Delivery maps it to 452 4.2.2 / 552 5.2.2."""

    def __init__(self, message: str = "quota exceeded", permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Invalid(Exception):
    """Input that can never be accepted as given (a bad name, a bad address)."""
