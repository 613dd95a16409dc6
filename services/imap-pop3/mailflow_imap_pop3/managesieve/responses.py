"""ManageSieve wire text (RFC 5804 §1.3, §4): the only place that formats it.

A response is OK, NO or BYE, an optional response code in parentheses and an optional human-readable
string. Strings go out quoted when they can (printable, no CR/LF, at most 1024 octets), else as a
literal `{n}` CRLF octets.
"""

from __future__ import annotations

from dataclasses import dataclass


def string(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= 1024 and not any(c in data for c in b"\r\n\x00"):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


@dataclass(frozen=True)
class Reply:
    status: str  # OK | NO | BYE
    text: str = ""
    code: str = ""  # e.g. "NONEXISTENT", "QUOTA/MAXSIZE", 'TAG "x"'

    def line(self) -> bytes:
        out = self.status.encode()
        if self.code:
            out += b" (" + self.code.encode() + b")"
        if self.text:
            out += b" " + string(self.text)
        return out + b"\r\n"


ANSWERED = Reply("OK", "answered by the handler")  # the handler wrote its own reply (STARTTLS)
R_AUTH_FAILED = Reply("NO", "Authentication failed")
R_THROTTLED = Reply("NO", "Too many failed logins; try again later", "TRYLATER")
R_PRIVACY = Reply("NO", "Use STARTTLS before authenticating with a password", "ENCRYPT-NEEDED")
R_UNAVAILABLE = Reply("NO", "Server temporarily unavailable; try again later", "TRYLATER")
R_EXPIRED = Reply("BYE", "Session expired; log in again")
BYE_TOO_MANY_CONNECTIONS = Reply("BYE", "Too many connections from your address").line()
BYE_SERVER_BUSY = Reply("BYE", "Server busy; try again later", "TRYLATER").line()
BYE_EVICTED = Reply("BYE", "Server full; unauthenticated connection closed", "TRYLATER").line()
