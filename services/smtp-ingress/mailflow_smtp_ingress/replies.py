"""Every SMTP reply smtp-ingress sends, and `to_reply`: the one place an exception becomes a reply.

Replies carry an RFC 3463 enhanced status code (RFC 2034: on every reply but the greeting, the answer
to EHLO/HELO, the 354 go-ahead of DATA and the 334 AUTH challenges, whose text is fixed by the
protocols). Reply text never holds tracebacks, host names of other machines, SQL or configuration:
an unexpected error is logged with a short ref and the client only sees that ref (`to_reply`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mailflow.errors import ProtocolError, ServiceUnavailable
from mailflow.sasl import SaslError
from mailflow_smtp_ingress import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str  # enhanced status code "2.0.0", or "" where the protocol forbids one
    text: str
    wire: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", self._encode())

    def _encode(self) -> bytes:
        prefix = f"{self.status} " if self.status else ""
        lines = self.text.split("\n") or [""]
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def __str__(self) -> str:
        return self.wire.decode("utf-8", "replace").rstrip("\r\n")


def multiline(code: int, lines: list[str]) -> Reply:
    """EHLO and HELP answers: several lines, no enhanced status code."""
    return Reply(code, "", "\n".join(lines))


# --- 2xx / 3xx --------------------------------------------------------------------------------------
R221_BYE = Reply(221, "2.0.0", "Bye")
R235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R250_OK = Reply(250, "2.0.0", "Ok")
R250_SENDER_OK = Reply(250, "2.1.0", "Sender ok")
R250_RCPT_OK = Reply(250, "2.1.5", "Recipient ok")
R250_QUEUED = Reply(250, "2.0.0", "Ok: queued")  # with_text(f"Ok: queued as {queue_id}")
R250_CHUNK_OK = Reply(250, "2.0.0", "Chunk received")
R252_CANNOT_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
R220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
R214_HELP = Reply(
    214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT STARTTLS AUTH"
)
R354_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")  # RFC 2034: no code here (like Postfix)

# --- 4xx: try again later ------------------------------------------------------------------------------
R421_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
R421_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")  # RFC 5321 §4.5.3.2.7
R421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
R421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address, try again later")
R421_SERVER_BUSY = Reply(421, "4.3.2", "Too many connections, try again later")
R421_EVICTED = Reply(421, "4.3.2", "Too many connections, closing an idle one, try again later")
R421_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
R451_TRY_LATER = Reply(451, "4.3.0", "Mail system temporarily unavailable, try again later")
R451_INTERNAL = Reply(451, "4.3.0", "Internal error, try again later")  # with_text(f"... ref {ref}")
R451_DIRECTORY_DOWN = Reply(451, "4.4.3", "Directory unavailable, cannot check recipient; try again later")
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
R454_AUTH_TEMP = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
R451_AUTH_UNCHECKED = Reply(451, "4.4.3", "Cannot check your login right now; try again later")
R454_AUTH_THROTTLED = Reply(
    454, "4.7.0", "Too many failed authentications from your address, try again later"
)
R454_TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
# Inbound authentication (checks.py) could not be done where its verdict counts: RFC 7372 codes where
# they exist (X.7.24 SPF validation error, X.7.20 no passing DKIM signature); DMARC has none: X.7.1.
R451_SPF_TEMP = Reply(451, "4.7.24", "SPF validation error (DNS), try again later")
R451_DKIM_TEMP = Reply(451, "4.7.20", "Cannot verify the DKIM signatures now (DNS), try again later")
R451_ARC_TEMP = Reply(451, "4.7.29", "Cannot verify the ARC chain now (DNS), try again later")
R451_DMARC_TEMP = Reply(451, "4.7.1", "Cannot check the DMARC policy of the From domain now, try again later")
# rspamd (rspamd.py): its soft reject or greylist; or it could not be asked and rspamd_fail_open is off
R451_SPAM_TRY_LATER = Reply(451, "4.7.1", "Message deferred by the spam filter, try again later")
R451_SPAM_CHECK_UNAVAILABLE = Reply(451, "4.7.1", "Spam filter unavailable, try again later")

# --- 5xx: syntax and sequence -------------------------------------------------------------------------
R500_UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
R500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")  # RFC 5321 §4.5.3.1.4 / §4.5.3.1.6
R500_TEXT_LINE_TOO_LONG = Reply(500, "5.5.2", "Message line longer than 1000 octets")  # §4.5.3.1.6
R500_BARE_LF = Reply(500, "5.5.2", "Bare CR or LF in command; lines must end with CRLF")
R500_NUL = Reply(500, "5.5.2", "NUL character in command")
R500_BAD_ENCODING = Reply(500, "5.5.2", "Command is not valid UTF-8")
R501_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
R501_EHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
R501_HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: HELO hostname")
R501_MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
R501_RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
R501_BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
R501_BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
R501_BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
R501_NO_ARGUMENTS = Reply(501, "5.5.4", "No arguments allowed")
R501_AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
R501_AUTH_RESPONSE = Reply(501, "5.5.2", "Cannot decode the response")  # with_text(the reason)
R502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
R503_HELO_FIRST = Reply(503, "5.5.1", "Send EHLO/HELO first")
R503_NESTED_MAIL = Reply(503, "5.5.1", "Sender already given")
R503_NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
R503_NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
R503_ALREADY_AUTH = Reply(503, "5.5.1", "Already authenticated")
R503_AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
R503_ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
R503_MIXED_DATA_BDAT = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed in one transaction")
R503_BDAT_FAILED = Reply(503, "5.5.1", "Earlier chunk failed; send RSET")
R504_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
R530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
R530_AUTH_REVOKED = Reply(530, "5.7.0", "Authentication required: your password or account status changed")
R530_STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
R530_REQUIRETLS_WITHOUT_TLS = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session: STARTTLS first")  # RFC 8689
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R538_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
R555_UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter")
R553_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")

# --- 5xx: policy ---------------------------------------------------------------------------------------
R550_NO_SUCH_USER = Reply(550, "5.1.1", "Recipient address rejected: user unknown")
R550_RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
R550_SPAM = Reply(550, "5.7.1", "Message rejected as spam")  # rspamd's action "reject" (rspamd.py)
R553_SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
R552_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
R554_NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
R550_BARE_LF_DATA = Reply(550, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF")
R550_NUL_DATA = Reply(550, "5.6.0", "Message contains NUL characters")
# Inbound authentication failed where it is enforced (RFC 7372, RFC 8617 §10.3; DMARC: RFC 7489 §6.7).
R550_SPF_FAIL = Reply(550, "5.7.23", "SPF validation failed")  # with_text(...: the domain's explanation)
R550_DKIM_FAIL = Reply(550, "5.7.20", "No passing DKIM signature found")
R550_ARC_FAIL = Reply(550, "5.7.29", "ARC validation failure")
R550_DMARC_REJECT = Reply(550, "5.7.1", "Rejected by the DMARC policy of the From domain")


def to_reply(exc: BaseException, ref: str) -> Reply:
    """The only mapping from an exception to what the client sees. Unclassified means temporary."""
    match exc:
        case ProtocolError():
            return exc.reply
        case SaslError():  # a response AUTH cannot decode (mailflow.sasl says why)
            return R501_AUTH_RESPONSE.with_text(f"Cannot decode the response: {exc}")
        case ServiceUnavailable() | TimeoutError() | OSError():
            log.warning("temporary failure: %s", exc, extra={"ref": ref})
            return R451_TRY_LATER
        case _:
            metrics.INTERNAL_ERRORS.inc()
            log.error("internal error", exc_info=exc, extra={"ref": ref})
            return R451_INTERNAL.with_text(f"Internal error, try again later (ref {ref})")


def closing(reply: Reply) -> Reply:
    """`reply` as the last word before the session closes: 421 with its enhanced code and text."""
    status = reply.status if reply.status.startswith("4") else "4.3.0"
    return Reply(421, status, f"{reply.text}; closing connection")
