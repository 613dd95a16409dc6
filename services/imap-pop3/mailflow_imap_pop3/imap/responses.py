"""Every byte of IMAP wire text the server sends is formatted here (RFC 3501 §7 and §9).

Strings go out quoted when they are short 7-bit text and as literals otherwise (8-bit, CR/LF, long),
so any value survives the trip. Mailbox names are always quoted, in modified UTF-7. Nothing here
raises for any value the store or `mailflow.mime` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from mailflow import mime
from mailflow_imap_pop3.imap import mutf7

CRLF = b"\r\n"
NIL = b"NIL"
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_QUOTABLE_MAX = 256


@dataclass(frozen=True, slots=True)
class Reply:
    """A tagged (or BYE) completion: status OK/NO/BAD/BYE, an optional response code, the text."""

    status: str
    text: str
    code: str | None = None

    def line(self, tag: str) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode("utf-8", "replace")

    def with_text(self, text: str) -> Reply:
        return Reply(self.status, text, self.code)


ANSWERED = Reply("OK", "")  # a handler that already wrote its tagged reply returns this


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    return Reply(status, text, code).line(tag)


def untagged(text: str) -> bytes:
    return b"* " + text.encode("utf-8", "replace") + CRLF


# In place of the greeting, over a connection cap (RFC 3501 §7.1.5: BYE at connection refuses it).
BYE_TOO_MANY_CONNECTIONS = untagged("BYE Too many connections from your address, try again later")
BYE_SERVER_BUSY = untagged("BYE Too many connections, try again later")
# To a session that has not logged in, evicted to make room for a new one (the service is full).
BYE_EVICTED = untagged("BYE [UNAVAILABLE] Too many connections, closing an idle one, try again later")


def ok_code(code: str, text: str) -> bytes:
    return b"* OK [" + code.encode() + b"] " + text.encode() + CRLF


def continuation(text: str = "Ready") -> bytes:
    return b"+ " + text.encode() + CRLF


# --- strings ----------------------------------------------------------------------------------------


def string(value: bytes | str) -> bytes:
    """A quoted string when it can be one, otherwise a literal."""
    b = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(b) <= _QUOTABLE_MAX and b.isascii() and b"\r" not in b and b"\n" not in b and b"\x00" not in b:
        if b"\\" in b or b'"' in b:
            b = b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + b + b'"'
    return b"{%d}\r\n" % len(b) + b


def nstring(value: bytes | str | None) -> bytes:
    return NIL if value is None else string(value)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as the client sees it: modified UTF-7, quoted; UTF-8 (a literal when not ASCII) for a
    session that enabled IMAP4rev2 (RFC 9051 §5.1)."""
    return string(name if utf8 else mutf7.encode(name))


_FLAG_ORDER = {f: i for i, f in enumerate(("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"))}
_RECENT = "\\Recent"


@lru_cache(maxsize=4096)
def _flag_set(values: frozenset[str]) -> bytes:
    ordered = sorted(values, key=lambda f: (f == _RECENT, _FLAG_ORDER.get(f, 9), f))
    return b"(" + " ".join(ordered).encode("utf-8", "replace") + b")"


def flags(values) -> bytes:
    """A flag list in a stable order: system flags, keywords (sorted), \\Recent last."""
    if isinstance(values, frozenset):
        return _flag_set(values)
    return b"(" + " ".join(values).encode("utf-8", "replace") + b")"


def internaldate(dt: datetime | None) -> bytes:
    """RFC 3501 date-time: "05-Nov-2020 10:00:00 +0100" (day padded with a space is also legal; we use 0)."""
    if dt is None:
        dt = datetime.fromtimestamp(0, UTC)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    off = dt.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        dt.day, _MONTHS[dt.month - 1], dt.year, dt.hour, dt.minute, dt.second, sign, minutes // 60, minutes % 60,
    )  # fmt: skip


# --- ENVELOPE and BODYSTRUCTURE ---------------------------------------------------------------------


def _addresses(addrs: tuple[mime.Address, ...]) -> bytes:
    if not addrs:
        return NIL
    return (
        b"("
        + b"".join(
            b"(" + b" ".join((nstring(a.name), nstring(a.adl), nstring(a.mailbox), nstring(a.host))) + b")"
            for a in addrs
        )
        + b")"
    )


def envelope(env: mime.Envelope) -> bytes:
    return b"(" + b" ".join((
        nstring(env.date), nstring(env.subject), _addresses(env.from_), _addresses(env.sender),
        _addresses(env.reply_to), _addresses(env.to), _addresses(env.cc), _addresses(env.bcc),
        nstring(env.in_reply_to), nstring(env.message_id),
    )) + b")"  # fmt: skip


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(string(k) + b" " + string(v) for k, v in params) + b")"


def _disposition(d) -> bytes:
    if d is None:
        return NIL
    return b"(" + string(d[0]) + b" " + _params(d[1]) + b")"


def _language(lang: tuple[str, ...] | None) -> bytes:
    if not lang:
        return NIL
    if len(lang) == 1:
        return string(lang[0])
    return b"(" + b" ".join(string(x) for x in lang) + b")"


def body_structure(part: mime.BodyPart, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (extended=True) or BODY (extended=False) of a part and everything inside it."""
    if part.type == "MULTIPART":
        out = [b"(", b"".join(body_structure(p, extended) for p in part.parts), b" ", string(part.subtype)]
        if extended:
            out += [b" ", _params(part.params), b" ", _disposition(part.disposition), b" ",
                    _language(part.language), b" ", nstring(part.location)]  # fmt: skip
        out.append(b")")
        return b"".join(out)
    fields = [
        string(part.type), string(part.subtype), _params(part.params), nstring(part.id),
        nstring(part.description), string(part.encoding), b"%d" % part.size,
    ]  # fmt: skip
    if part.type == "MESSAGE" and part.envelope is not None and part.parts:
        fields += [
            envelope(part.envelope),
            body_structure(part.parts[0], extended),
            b"%d" % (part.lines or 0),
        ]
    elif part.type == "TEXT":
        fields.append(b"%d" % (part.lines or 0))
    if extended:
        fields += [
            nstring(part.md5),
            _disposition(part.disposition),
            _language(part.language),
            nstring(part.location),
        ]
    return b"(" + b" ".join(fields) + b")"


def uid_set(values) -> str:
    """[1, 2, 3, 5] -> "1:3,5" (the order given is kept: COPYUID pairs source and destination by position)."""
    out: list[str] = []
    start = prev = None
    for v in values:
        if prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = v
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


VANISHED_RANGES_PER_LINE = 1000  # a long list goes as several responses (RFC 7162 §3.2.10 allows it)


def vanished(ranges, earlier: bool) -> list[bytes]:
    """`* VANISHED [(EARLIER)] <uid ranges>` (RFC 7162 §3.2.10), one line per 1000 ranges; none if empty."""
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    out = []
    for k in range(0, len(ranges), VANISHED_RANGES_PER_LINE):
        chunk = ranges[k : k + VANISHED_RANGES_PER_LINE]
        text = b",".join(b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in chunk)
        out.append(head + text + CRLF)
    return out


# --- RFC 8474 object identifiers ----------------------------------------------------------------------
# objectid = 1*255(ALPHA / DIGIT / "_" / "-"). A mailbox's MAILBOXID is its store id (never reused, kept
# across RENAME); a message's EMAILID is its stored body's id (a COPY or MOVE shares it). No THREADID: NIL.


def mailbox_id(n: int) -> str:
    return f"F{n}"


def email_id(n: int) -> str:
    return f"M{n}"


def email_id_number(text: str) -> int | None:
    """The body id an EMAILID names, or None for one we never gave (which then matches nothing)."""
    digits = text[1:]
    if text[:1] != "M" or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


def thread(nodes: list[tuple[int, int]]) -> bytes:
    """`* THREAD` (RFC 5256 §5) from threads as a preorder of (number, depth), 0 for a dummy: a message
    with one child is followed by it in the same list, one with several by each child's own "(...)";
    a dummy is its children's "(...)"s. Two passes over the numbers with a path of indexes, no
    recursion and no list per message (a reply chain may be 10,000 deep, a mailbox 100,000 long).
    Depths must grow by one at most (ValueError otherwise)."""
    kids = [0] * len(nodes)
    path: list[int] = []
    for i, (_, depth) in enumerate(nodes):
        if depth > len(path):
            raise ValueError("thread depth skips a level")
        del path[depth:]
        if path:
            kids[path[-1]] += 1
        path.append(i)
    out = [b"* THREAD"]
    append = out.append
    seen = [0] * len(nodes)  # children written so far, per node
    path.clear()
    opened: list[bool] = []  # per node on the path: did it open a "("?
    for i, (number, depth) in enumerate(nodes):
        while len(path) > depth:
            path.pop()
            if opened.pop():
                append(b")")
        if not path:
            append(b" (" if len(out) == 1 else b"(")
            opened.append(True)
        else:
            p = path[-1]
            if nodes[p][0] == 0:  # a dummy's children each in their own list, nothing before
                append(b"(")
                opened.append(True)
            elif kids[p] > 1:
                append(b" (" if seen[p] == 0 else b"(")
                opened.append(True)
            else:
                append(b" ")
                opened.append(False)
            seen[p] += 1
        if number:
            append(b"%d" % number)
        path.append(i)
    while opened:
        if opened.pop():
            append(b")")
    append(b"\r\n")
    return b"".join(out)
