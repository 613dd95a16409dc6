"""IMAP URLs (RFC 5092) naming one message or one of its sections, as CATENATE (RFC 4469) takes them.

`parse(url, base)` -> MessageUrl, or BadUrl (the session answers NO [BADURL url]). No I/O, no regular
expression: the URL is cut at its ";" and "/" by hand. Three forms are read:

    imap://alice%40example.test@mail.example.test/INBOX;UIDVALIDITY=7/;UID=3/;SECTION=1.2
    /INBOX;UIDVALIDITY=7/;UID=3/;SECTION=HEADER.FIELDS%20(SUBJECT)/;PARTIAL=0.100
    ;UID=3/;SECTION=TEXT                      (relative to the selected mailbox: `base`)

Whether the user and the server of the first form are ours, and the mailbox the user's, the session
decides (commands/catenate.py); the section is FETCH's grammar (parser.section), read once, here.
Not read (BadUrl): URLAUTH (;EXPIRE=, ;URLAUTH=), searches (?...), mailbox-only URLs, anything
longer than MAX_URL or outside printable ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailflow_imap_pop3.imap.lexer import ParseError, Reader, normalize_mailbox
from mailflow_imap_pop3.imap.parser import section as read_section
from mailflow_imap_pop3.imap.syntax import Section

MAX_URL = 2048
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 unreserved, sub-delims and the ":@/%" of paths; "?", "#", "[", "]" and the rest are refused
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%")


class BadUrl(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MessageUrl:
    user: str | None  # the imap:// form's user (decoded); None for a relative URL
    host: str | None  # the imap:// form's host, lower case, without its port
    mailbox: str
    uidvalidity: int | None
    uid: int
    section: Section = Section()
    partial: tuple[int, int | None] | None = None  # ;PARTIAL=offset[.length]


def echo(url: str) -> str:
    """The URL as the BADURL response code can carry it: printable ASCII, no "]" (escaped otherwise)."""
    out = []
    for ch in url[:MAX_URL]:
        out.append(ch if ch in _ALLOWED else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "replace")))
    return "".join(out)


def unescape(text: str) -> bytes:
    """%XX decoding, strictly: a "%" not followed by two hex digits is an error."""
    first, *rest = text.split("%")
    out = bytearray(first.encode("ascii"))
    for piece in rest:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise BadUrl("bad %-escape")
        out.append(int(piece[:2], 16))
        out += piece[2:].encode("ascii")
    return bytes(out)


def _number(text: str, what: str, zero: bool = False) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or (int(text) == 0 and not zero):
        raise BadUrl(f"bad {what}")
    n = int(text)
    if n > 0xFFFFFFFF:
        raise BadUrl(f"bad {what}")
    return n


def _section(text: str) -> Section:
    raw = unescape(text)
    r = Reader(b"[" + raw + b"]")
    try:
        sec = read_section(r)
        r.end()
    except ParseError:
        raise BadUrl("bad section") from None
    return sec


def _partial(text: str) -> tuple[int, int | None]:
    offset, dot, length = text.partition(".")
    return _number(offset, "partial offset", zero=True), (_number(length, "partial length") if dot else None)


def _mailbox(text: str) -> str:
    try:
        name = unescape(text).decode("utf-8")  # RFC 5092 §3.4: UTF-8, %-escaped (not modified UTF-7)
    except UnicodeDecodeError:
        raise BadUrl("mailbox name is not UTF-8") from None
    if not name or not name.isprintable():
        raise BadUrl("bad mailbox name")
    return normalize_mailbox(name)


def parse(url: str, base: tuple[str, int] | None = None) -> MessageUrl:
    """One URL naming a message (and perhaps a section and a range of it). `base`: the selected
    mailbox's (name, UIDVALIDITY), against which ";UID=..." resolves."""
    if not url or len(url) > MAX_URL or any(ch not in _ALLOWED for ch in url):
        raise BadUrl("not an IMAP URL")
    user = host = None
    if url[:7].lower() == "imap://":
        authority, slash, path = url[7:].partition("/")
        if not slash:
            raise BadUrl("no mailbox")
        userinfo, at, hostport = authority.rpartition("@")
        if not at:
            raise BadUrl("no user (anonymous access is not offered)")
        enc_user = userinfo.split(";", 1)[0]  # ";AUTH=..." says how to log in: we are logged in
        if not enc_user:
            raise BadUrl("no user")
        try:
            user = unescape(enc_user).decode("utf-8")
        except UnicodeDecodeError:
            raise BadUrl("user name is not UTF-8") from None
        host, colon, port = hostport.partition(":")
        if not host or (colon and not port.isdigit()):
            raise BadUrl("bad server")
        host = unescape(host).decode("latin-1").lower()
        mailbox_part = path
    elif url.startswith("/"):
        mailbox_part = url[1:]
    elif url[:5].upper() == ";UID=":
        if base is None:
            raise BadUrl("a relative URL needs a selected mailbox")
        mailbox_part = None
    else:
        raise BadUrl("not an IMAP URL")
    if mailbox_part is None:
        mailbox, uidvalidity = base
        params = url[1:].split(";")
    else:
        enc_mailbox, *params = mailbox_part.split(";")
        uidvalidity = None
        if enc_mailbox.endswith("/"):
            enc_mailbox = enc_mailbox[:-1]
        elif params:  # "INBOX;UIDVALIDITY=7/" : the UIDVALIDITY belongs to the mailbox
            key, eq, value = params.pop(0).partition("=")
            if key.upper() != "UIDVALIDITY" or not value.endswith("/"):
                raise BadUrl("expected ;UIDVALIDITY= or /;UID=")
            uidvalidity = _number(value[:-1], "UIDVALIDITY")
        mailbox = _mailbox(enc_mailbox)
    # the rest: UID=n [/ SECTION=s] [/ PARTIAL=p], each but the last ending with "/"
    order = ("UID", "SECTION", "PARTIAL")
    values: dict[str, str] = {}
    for n, param in enumerate(params):
        key, eq, value = param.partition("=")
        key = key.upper()
        last = n == len(params) - 1
        if not last:
            if not value.endswith("/"):
                raise BadUrl("expected /;")
            value = value[:-1]
        if not eq or key not in order or (values and order.index(key) <= order.index(list(values)[-1])):
            raise BadUrl(f"unexpected ;{key[:20]}")
        values[key] = value
    if "UID" not in values:
        raise BadUrl("no ;UID=: only messages and their parts can be catenated")
    return MessageUrl(
        user,
        host,
        mailbox,
        uidvalidity,
        _number(values["UID"], "UID"),
        _section(values["SECTION"]) if "SECTION" in values else Section(),
        _partial(values["PARTIAL"]) if "PARTIAL" in values else None,
    )
