"""IMAP lexical items (RFC 3501 §9): atoms, quoted strings, literals, numbers, sequence sets, flags, dates,
mailbox names, read by a cursor over one framed command. No I/O.

Every `Reader` method consumes what it returns or raises `ParseError` (the session answers BAD, or NO
with a code when `status`/`code` say so); nothing raises anything else for any input.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from mailflow.store.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN
from mailflow_imap_pop3.imap import mutf7
from mailflow_imap_pop3.imap.syntax import STAR, SeqSet


class ParseError(Exception):
    def __init__(self, text: str, tag: str = "*", status: str = "BAD", code: str | None = None):
        super().__init__(text)
        self.text, self.tag, self.status, self.code = text, tag, status, code


TAG = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\+]+")
ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\\]]+")
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\]+")
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f(){\"\\]+")
_NUMBER = re.compile(rb"\d+")
_SEQSET = re.compile(rb"[0-9*:,]+")  # checked item by item in Reader.seqset
_QUOTED = re.compile(rb'"([^"\\\r\n]*+(?:\\["\\][^"\\\r\n]*+)*+)"')  # possessive: one pass
_LITERAL = re.compile(rb"~?\{(\d+)\+?\}\r\n")
FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb'" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_MONTHS = {m: i for i, m in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_SYSTEM_FLAGS = {f.upper(): f for f in (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)}
MAX_NUMBER = 2**63 - 1  # mod-sequence-value's range; numbers and UIDs are 32-bit (checked separately)
# Ranges written in one sequence set. A 64 KiB line holds at most 32,768 ("1,1,..."); the bound holds
# if the line limit is raised. The parser merges them (16,000 copies of "1:*" are one range).
MAX_SEQ_RANGES = 32_768
MAX_LIST_ITEMS = 1000  # in one parenthesized list (FETCH items, flags, header names, ID pairs)


class Reader:
    """A cursor over one framed command. Every method consumes what it returns or raises ParseError."""

    __slots__ = ("data", "pos", "tag", "bad_name")

    def __init__(self, data: bytes, pos: int = 0, tag: str = "*"):
        self.data, self.pos, self.tag = data, pos, tag
        # The first mailbox name that is not modified UTF-7: (why, code). The command's syntax is
        # still checked to its end, and the Command carries it (RFC 3501 §5.1.3: NO, not BAD).
        self.bad_name: tuple[str, str] | None = None

    def error(self, what: str) -> ParseError:
        near = self.data[self.pos : self.pos + 20].decode("latin-1", "replace")
        return ParseError(
            f"Syntax error: {what} expected" + (f" near {near!r}" if near else " at end"), self.tag
        )

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.error("end of command")

    def expect(self, token: bytes) -> None:
        if self.data[self.pos : self.pos + len(token)].upper() != token:
            raise self.error(repr(token.decode()))
        self.pos += len(token)

    def sp(self) -> None:
        if self.data[self.pos : self.pos + 1] != b" ":
            raise self.error("space")
        self.pos += 1

    def maybe(self, token: bytes) -> bool:
        if self.data[self.pos : self.pos + len(token)].upper() == token:
            self.pos += len(token)
            return True
        return False

    def match(self, rx: re.Pattern, what: str) -> re.Match:
        m = rx.match(self.data, self.pos)
        if m is None:
            raise self.error(what)
        self.pos = m.end()
        return m

    def atom(self) -> bytes:
        return self.match(ATOM, "atom").group()

    def keyword(self) -> str:
        return self.atom().decode("latin-1").upper()

    def number(self, limit: int = 0xFFFFFFFF) -> int:
        n = int(self.match(_NUMBER, "number").group())
        if n > limit:
            raise self.error(f"number up to {limit}")
        return n

    def nz_number(self, limit: int = 0xFFFFFFFF) -> int:
        n = self.number(limit)
        if n == 0:
            raise self.error("non-zero number")
        return n

    def literal(self) -> bytes:
        m = self.match(_LITERAL, "literal")
        n = int(m.group(1))
        if self.pos + n > len(self.data):
            raise self.error("literal data")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def quoted(self) -> bytes:
        m = self.match(_QUOTED, "quoted string")
        s = m.group(1)
        return (
            s.replace(b"\\\\", b"\\\x00").replace(b'\\"', b'"').replace(b"\\\x00", b"\\") if b"\\" in s else s
        )

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{" or c == b"~":
            return self.literal()
        raise self.error("string")

    def astring(self) -> bytes:
        c = self.peek()
        if c == b'"' or c == b"{":
            return self.string()
        return self.match(_ASTRING_ATOM, "astring").group()

    def nstring(self) -> bytes | None:
        if self.peek(3).upper() == b"NIL" and not _ASTRING_ATOM.match(self.data, self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def text(self, charset: str = "utf-8") -> str:
        """An astring as text (UTF-8; bytes that are not UTF-8 become U+FFFD, never an error)."""
        return self.astring().decode(charset, "replace")

    def mailbox(self, new: bool = False) -> str:
        """A mailbox name, decoded. One that is not modified UTF-7 is noted in `bad_name` (code CANNOT
        for a name to be created, `new`; else NONEXISTENT: no mailbox has it) and read as ""."""
        raw = self.astring()
        try:
            return normalize_mailbox(mutf7.decode(raw))
        except ValueError as exc:
            if self.bad_name is None:
                self.bad_name = (f"Invalid mailbox name: {exc}", "CANNOT" if new else "NONEXISTENT")
            return ""

    def list_mailbox(self) -> str | None:
        """A LIST/LSUB pattern, decoded; None for one that is not modified UTF-7 (it matches nothing)."""
        c = self.peek()
        raw = self.string() if c in (b'"', b"{") else self.match(_LIST_ATOM, "mailbox pattern").group()
        try:
            return mutf7.decode(raw)
        except ValueError:
            return None

    def seqset(self) -> SeqSet:
        """RFC 3501 §9 sequence-set, taken as one token and split in C (16,000 ranges in a few ms), or
        RFC 5182's "$" (the saved search result)."""
        if self.peek() == b"$":
            self.pos += 1
            return SeqSet((), saved=True)
        items = self.match(_SEQSET, "sequence set").group().split(b",")
        if len(items) > MAX_SEQ_RANGES:
            raise ParseError(f"Too many ranges in a sequence set (the limit is {MAX_SEQ_RANGES})", self.tag)
        ranges = []
        for item in items:
            a, colon, b = item.partition(b":")
            first = self._seq_number(a)
            ranges.append((first, self._seq_number(b) if colon else first))
        return SeqSet.of(ranges)

    def _seq_number(self, text: bytes) -> int:
        if text == b"*":
            return STAR
        if not text.isdigit() or len(text) > 10 or not 0 < int(text) <= 0xFFFFFFFF:
            raise self.error("sequence number from 1 to 4294967295")
        return int(text)

    def paren(self, item, allow_empty: bool = False) -> list:
        self.expect(b"(")
        out = []
        if self.maybe(b")"):
            if allow_empty:
                return out
            raise self.error("list item")
        while True:
            if len(out) == MAX_LIST_ITEMS:
                raise ParseError(f"Too many items in a list (the limit is {MAX_LIST_ITEMS})", self.tag)
            out.append(item())
            if self.maybe(b")"):
                return out
            self.sp()

    def flag(self) -> str:
        if self.maybe(b"\\"):
            name = self.atom().decode("latin-1")
            system = _SYSTEM_FLAGS.get("\\" + name.upper())
            if system is None:
                raise ParseError(f"Invalid system flag \\{name}", self.tag)
            return system
        return self.atom().decode("latin-1")

    def flag_list(self) -> tuple[str, ...]:
        return tuple(self.paren(self.flag, allow_empty=True))

    def date(self) -> date:
        quoted = self.maybe(b'"')
        m = self.match(_DATE, "date (d-Mon-yyyy)")
        if quoted:
            self.expect(b'"')
        return _make_date(self, m.group(1), m.group(2), m.group(3))

    def date_time(self) -> datetime:
        m = self.match(_DATE_TIME, 'date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")')
        d = _make_date(self, m.group(1), m.group(2), m.group(3))
        hh, mm, ss, zh, zm = (int(x) for x in (m.group(4), m.group(5), m.group(6), m.group(8), m.group(9)))
        if hh > 23 or mm > 59 or ss > 60 or zm > 59:
            raise self.error("valid time")
        offset = timedelta(hours=zh, minutes=zm) * (-1 if m.group(7) == b"-" else 1)
        return datetime(d.year, d.month, d.day, hh, mm, min(ss, 59), tzinfo=timezone(offset))


def _make_date(r: Reader, day: bytes, month: bytes, year: bytes) -> date:
    mon = _MONTHS.get(month.upper())
    try:
        if mon is None:
            raise ValueError
        return date(int(year), mon, int(day))
    except ValueError:
        raise r.error("valid date") from None


def normalize_mailbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 §5.1), also as the first level of a hierarchy."""
    head, sep, rest = name.partition("/")
    return "INBOX" + sep + rest if head.upper() == "INBOX" else name
