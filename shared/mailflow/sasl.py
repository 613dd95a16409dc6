"""SASL client responses for SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH: PLAIN (RFC 4616) and the
base64 steps of LOGIN. Pure: no I/O, no state, nothing about users beyond what the response says.

`decode_plain` takes the client's base64 text and returns (authentication identity, password).
Every problem raises `SaslError`, whose text is fit for the client (it never echoes the response):
not base64, too long, not exactly two NULs (RFC 4616 §2: `[authzid] NUL authcid NUL passwd`), an
empty identity or password, text that is not UTF-8. An authorization identity other than empty or
the authentication identity itself (compared case-insensitively, as the store compares users)
raises `AuthzidRefused`, a `SaslError`: we let no user act as another, and the protocols answer it
as a failed login (SMTP 535), not as a syntax error. "=" is the empty response (RFC 4954 §4,
RFC 4959 §3); the callers handle "*" (cancel) before decoding, since what it means is protocol's.
"""

from __future__ import annotations

import base64
import binascii

# RFC 4616 §2: a server MUST accept identities and passwords of up to 255 octets and MAY accept more.
# An address is at most 254 octets (RFC 5321 §4.5.3.1.3); the rest bounds what a client can make us decode.
MAX_IDENTITY = 320
MAX_PASSWORD = 1024
MAX_ENCODED = 4 * ((2 * MAX_IDENTITY + MAX_PASSWORD + 2 + 2) // 3)  # the longest PLAIN response in base64


class SaslError(ValueError):
    """The response cannot be used; str(exc) says why, for the client."""


class AuthzidRefused(SaslError):
    """PLAIN asked to act as another user (an authorization identity that is not the user's own)."""


def decode_base64(text: bytes | str, limit: int = MAX_ENCODED) -> bytes:
    """One client response: strict base64 (RFC 4648 alphabet and padding), "=" for an empty one."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    data = data.strip(b" \t\r\n")
    if data == b"=":
        return b""
    if len(data) > limit:
        raise SaslError("response too long")
    if len(data) % 4:  # RFC 4648 §4: whole quanta, padded (b64decode lets a stray "=" through)
        raise SaslError("response is not base64")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("response is not base64") from None


def _text(raw: bytes, what: str, limit: int) -> str:
    if len(raw) > limit:
        raise SaslError(f"{what} too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None


def decode_plain(text: bytes | str) -> tuple[str, str]:
    """RFC 4616 PLAIN: base64(`authzid NUL authcid NUL passwd`) -> (authcid, passwd)."""
    parts = decode_base64(text).split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN needs authzid NUL authcid NUL password")
    authzid = _text(parts[0], "authorization identity", MAX_IDENTITY)
    user = _text(parts[1], "user name", MAX_IDENTITY)
    password = _text(parts[2], "password", MAX_PASSWORD)
    if not user:
        raise SaslError("empty user name")
    if not password:
        raise SaslError("empty password")
    if authzid and authzid.casefold() != user.casefold():
        raise AuthzidRefused("authorization identity differs from the user")
    return user, password


def decode_login(text: bytes | str, what: str = "user name") -> str:
    """One LOGIN step (the user name, then the password): base64 of UTF-8 text, without NULs."""
    limit = MAX_PASSWORD if what == "password" else MAX_IDENTITY
    raw = decode_base64(text, 4 * ((limit + 2) // 3))
    if b"\x00" in raw:
        raise SaslError(f"NUL in the {what}")
    return _text(raw, what, limit)
