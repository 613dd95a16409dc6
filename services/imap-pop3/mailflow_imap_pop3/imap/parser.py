"""IMAP4rev1 commands from bytes: framing with literals, then the grammar of RFC 3501 §9 and extensions.

Two layers, neither does I/O:
  `Framer` is fed whatever the socket gave and cuts it into whole commands (a command line plus its
  literals). It knows the limits and applies them *before* reading: a synchronizing literal that is too
  large is refused instead of being asked for (`FrameError`, the client never sends it); a LITERAL+
  one that is too large is fatal (the client sends it anyway, RFC 7888 §4: `* BYE` and close); an
  over-long line is skipped up to its CRLF and answered `BAD`.
  `parse(data)` turns one framed command into a `Command` with typed arguments (`syntax.py`).
Failure: anything that does not match the grammar raises `ParseError` (the session answers BAD, or
NO [BADCHARSET] for an unknown SEARCH charset); nothing here raises anything else for any input.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from mailflow.store import search as sk
from mailflow.store.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

from mailflow_imap_pop3.imap import mutf7
from mailflow_imap_pop3.imap.syntax import (
    STAR,
    Append,
    Authenticate,
    Command,
    CopyMove,
    Enable,
    Fetch,
    FetchAtt,
    Id,
    ListCmd,
    Login,
    MailboxArg,
    RecentKey,
    Rename,
    Search,
    Section,
    Select,
    SeqArg,
    SeqKey,
    SeqSet,
    Status,
    Store,
    UidKey,
)


class ParseError(Exception):
    def __init__(self, text: str, tag: str = "*", status: str = "BAD", code: str | None = None):
        super().__init__(text)
        self.text, self.tag, self.status, self.code = text, tag, status, code


# --- framing ------------------------------------------------------------------------------------------


class Continue:
    """A synchronizing literal was accepted: the session sends "+ ..." and the client sends it."""


CONTINUE = Continue()


class FrameError:
    __slots__ = ("tag", "status", "text", "fatal")

    def __init__(self, tag: str, status: str, text: str, fatal: bool = False):
        self.tag, self.status, self.text, self.fatal = tag, status, text, fatal

    def __repr__(self) -> str:
        return f"FrameError({self.tag!r}, {self.status!r}, {self.text!r}, fatal={self.fatal})"


_LITERAL_END = re.compile(rb"\{(\d{1,20})(\+?)\}\Z")
_HEAD = re.compile(rb"([^\s(){%*\"\\\]+]+) +(?:(UID) +)?([A-Za-z]+)")
MAX_LITERALS = 64  # literals in one command


def _head(line: bytes) -> tuple[str, str]:
    """(tag, command name) from a command's first line, as well as they can be told."""
    m = _HEAD.match(line)
    if m is None:
        tag = line.split(b" ", 1)[0]
        return (tag.decode("latin-1") if tag and _TAG.fullmatch(tag) else "*"), ""
    return m.group(1).decode("latin-1"), m.group(3).decode("latin-1").upper()


class Framer:
    def __init__(self, max_line: int = 65_536, max_literal: int = 65_536, max_append: int = 50 * 1024 * 1024):
        self.max_line, self.max_literal, self.max_append = max_line, max_literal, max_append
        self._buf = bytearray()
        self._scan = 0  # the next LF is searched for from here
        self._cmd = bytearray()  # the command so far: whole lines and literals
        self._literal = 0  # literal octets still to move from _buf into _cmd
        self._literals = 0
        self._skipping = False  # dropping an over-long line up to its end
        self._tag, self._name = "*", ""

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet framed (pipelined commands, or the start of one)."""
        return len(self._buf)

    def discard(self) -> int:
        """Drop everything buffered (after STARTTLS: nothing sent in the clear may count). Returns how much."""
        n = len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._reset()
        return n

    def _reset(self) -> None:
        self._cmd = bytearray()
        self._literal = self._literals = 0
        self._tag, self._name = "*", ""

    def next_line(self) -> bytes | None:
        """One raw line (IDLE's DONE, an AUTHENTICATE response) without its CRLF, or None if incomplete.
        ValueError when it is longer than max_line (the line is dropped)."""
        i = self._buf.find(b"\n", self._scan)
        if i < 0:
            if len(self._buf) > self.max_line:
                self._skipping = True
                self._buf.clear()
                self._scan = 0
                raise ValueError("line too long")
            self._scan = len(self._buf)
            return None
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        self._scan = 0
        if self._skipping:
            self._skipping = False
            raise ValueError("line too long")
        return line[:-1] if line.endswith(b"\r") else line

    def next(self) -> bytes | Continue | FrameError | None:
        """The next whole command (bytes, no final CRLF), CONTINUE, a FrameError, or None (need more)."""
        buf = self._buf
        while True:
            if self._literal:
                n = min(self._literal, len(buf))
                if n == 0:
                    return None
                self._cmd += buf[:n]
                del buf[:n]
                self._literal -= n
                if self._literal:
                    return None
                self._scan = 0
            i = buf.find(b"\n", self._scan)
            if i < 0:
                if len(buf) > self.max_line and not self._skipping:
                    if not self._cmd:
                        self._tag, self._name = _head(bytes(buf[:200]))
                    self._skipping = True
                if self._skipping:
                    buf.clear()
                    self._scan = 0
                else:
                    self._scan = len(buf)
                return None
            line = bytes(buf[:i])
            del buf[: i + 1]
            self._scan = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skipping or len(line) > self.max_line:
                if not self._cmd and not self._skipping:
                    self._tag, self._name = _head(line[:200])
                self._skipping = False
                tag = self._tag
                self._reset()
                return FrameError(tag, "BAD", "Command line too long")
            if not self._cmd:
                if not line:
                    continue  # an empty line is no command: ignore it
                self._tag, self._name = _head(line)
            m = _LITERAL_END.search(line)
            if m is None:
                self._cmd += line
                data = bytes(self._cmd)
                self._reset()
                return data
            size, plus = int(m.group(1)), bool(m.group(2))
            append = self._name == "APPEND"
            limit = self.max_append if append else self.max_literal
            total = len(self._cmd) + len(line) + size
            self._literals += 1
            if size > limit or total > limit + 4 * self.max_line or self._literals > MAX_LITERALS:
                tag = self._tag
                self._reset()
                if plus:
                    return FrameError(tag, "BAD", "[TOOBIG] Literal too big", fatal=True)
                if append:
                    return FrameError(tag, "NO", f"[TOOBIG] Message too big (the limit is {limit} octets)")
                return FrameError(tag, "BAD", f"[TOOBIG] Literal too big (the limit is {limit} octets)")
            self._cmd += line + b"\r\n"
            self._literal = size
            if not plus:
                return CONTINUE


# --- lexical -------------------------------------------------------------------------------------------

_TAG = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\+]+")
_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\\]]+")
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\]+")
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f(){\"\\]+")
_NUMBER = re.compile(rb"\d+")
_SEQ = re.compile(rb"(\d+|\*)(?::(\d+|\*))?")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_LITERAL = re.compile(rb"~?\{(\d+)\+?\}\r\n")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb'" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_MONTHS = {m: i for i, m in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_SYSTEM_FLAGS = {f.upper(): f for f in (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)}
MAX_NUMBER = 2**63 - 1  # mod-sequence-value's range; numbers and UIDs are 32-bit (checked separately)


class Reader:
    """A cursor over one framed command. Every method consumes what it returns or raises ParseError."""

    __slots__ = ("data", "pos", "tag")

    def __init__(self, data: bytes, pos: int = 0, tag: str = "*"):
        self.data, self.pos, self.tag = data, pos, tag

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

    def _match(self, rx: re.Pattern, what: str) -> re.Match:
        m = rx.match(self.data, self.pos)
        if m is None:
            raise self.error(what)
        self.pos = m.end()
        return m

    def atom(self) -> bytes:
        return self._match(_ATOM, "atom").group()

    def keyword(self) -> str:
        return self.atom().decode("latin-1").upper()

    def number(self, limit: int = 0xFFFFFFFF) -> int:
        n = int(self._match(_NUMBER, "number").group())
        if n > limit:
            raise self.error(f"number up to {limit}")
        return n

    def nz_number(self, limit: int = 0xFFFFFFFF) -> int:
        n = self.number(limit)
        if n == 0:
            raise self.error("non-zero number")
        return n

    def literal(self) -> bytes:
        m = self._match(_LITERAL, "literal")
        n = int(m.group(1))
        if self.pos + n > len(self.data):
            raise self.error("literal data")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def quoted(self) -> bytes:
        m = self._match(_QUOTED, "quoted string")
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
        return self._match(_ASTRING_ATOM, "astring").group()

    def nstring(self) -> bytes | None:
        if self.peek(3).upper() == b"NIL" and not _ASTRING_ATOM.match(self.data, self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def text(self, charset: str = "utf-8") -> str:
        """An astring as text (UTF-8; bytes that are not UTF-8 become U+FFFD, never an error)."""
        return self.astring().decode(charset, "replace")

    def mailbox(self) -> str:
        raw = self.astring()
        try:
            return normalize_mailbox(mutf7.decode(raw))
        except ValueError as exc:
            raise ParseError(f"Bad mailbox name: {exc}", self.tag) from None

    def list_mailbox(self) -> str:
        c = self.peek()
        raw = self.string() if c in (b'"', b"{") else self._match(_LIST_ATOM, "mailbox pattern").group()
        try:
            return mutf7.decode(raw)
        except ValueError as exc:
            raise ParseError(f"Bad mailbox pattern: {exc}", self.tag) from None

    def seqset(self) -> SeqSet:
        ranges = []
        while True:
            m = self._match(_SEQ, "sequence set")
            a = STAR if m.group(1) == b"*" else int(m.group(1))
            b = a if m.group(2) is None else STAR if m.group(2) == b"*" else int(m.group(2))
            if (
                a == 0
                and m.group(1) != b"*"
                or b == 0
                and m.group(2) not in (None, b"*")
                or max(a, b) > 0xFFFFFFFF
            ):
                raise self.error("sequence number from 1 to 4294967295")
            ranges.append((a, b))
            if not self.maybe(b","):
                return SeqSet(tuple(ranges))

    def paren(self, item, allow_empty: bool = False) -> list:
        self.expect(b"(")
        out = []
        if self.maybe(b")"):
            if allow_empty:
                return out
            raise self.error("list item")
        while True:
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
        m = self._match(_DATE, "date (d-Mon-yyyy)")
        if quoted:
            self.expect(b'"')
        return _make_date(self, m.group(1), m.group(2), m.group(3))

    def date_time(self) -> datetime:
        m = self._match(_DATE_TIME, 'date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")')
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


# --- commands --------------------------------------------------------------------------------------------


def _none(r: Reader) -> None:
    return None


def _login(r: Reader) -> Login:
    r.sp()
    user = r.text()
    r.sp()
    return Login(user, r.text())


def _authenticate(r: Reader) -> Authenticate:
    r.sp()
    mech = r.keyword()
    initial = None
    if r.maybe(b" "):
        initial = r._match(_BASE64, "base64").group() or b"="
    return Authenticate(mech, initial)


def _select(r: Reader) -> Select:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    if r.maybe(b" "):
        for param in r.paren(r.keyword):
            if param != "CONDSTORE":
                raise ParseError(f"Unknown SELECT parameter {param}", r.tag)
            condstore = True
    return Select(mailbox, condstore)


_SPECIAL_USE = {
    x.upper(): x for x in ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged")
}


def _create(r: Reader) -> MailboxArg:
    r.sp()
    mailbox = r.mailbox()
    use = None
    if r.maybe(b" "):
        r.expect(b"(")
        r.expect(b"USE")
        r.sp()
        uses = r.paren(lambda: _use_flag(r))
        r.expect(b")")
        if len(uses) != 1:
            raise ParseError("Exactly one special-use attribute per mailbox", r.tag, "NO", "USEATTR")
        use = uses[0]
    return MailboxArg(mailbox, use)


def _use_flag(r: Reader) -> str:
    r.expect(b"\\")
    name = "\\" + r.atom().decode("latin-1")
    if name.upper() not in _SPECIAL_USE:
        raise ParseError(f"Unknown special-use attribute {name}", r.tag, "NO", "USEATTR")
    return _SPECIAL_USE[name.upper()]


def _mailbox_arg(r: Reader) -> MailboxArg:
    r.sp()
    return MailboxArg(r.mailbox())


def _rename(r: Reader) -> Rename:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(old, r.mailbox())


_LIST_SELECT = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}
STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}


def _status_items(r: Reader) -> tuple[str, ...]:
    items = tuple(r.paren(r.keyword))
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {item}", r.tag)
    return items


def _list(r: Reader) -> ListCmd:
    r.sp()
    select: frozenset[str] = frozenset()
    extended = False
    if r.peek() == b"(":
        select = frozenset(r.paren(r.keyword, allow_empty=True))
        if select - _LIST_SELECT:
            raise ParseError(f"Unknown LIST selection option {sorted(select - _LIST_SELECT)[0]}", r.tag)
        if "RECURSIVEMATCH" in select and not select - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option", r.tag)
        extended = True
        r.sp()
    try:
        reference = mutf7.decode(r.astring())
    except ValueError:
        raise ParseError("Bad reference name", r.tag) from None
    r.sp()
    if r.peek() == b"(":
        patterns = tuple(r.paren(r.list_mailbox))
        extended = True
    else:
        patterns = (r.list_mailbox(),)
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if r.maybe(b" "):
        r.expect(b"RETURN")
        r.sp()
        extended = True

        def option() -> str:
            nonlocal status
            name = r.keyword()
            if name == "STATUS":
                r.sp()
                status = _status_items(r)
            elif name not in _LIST_RETURN:
                raise ParseError(f"Unknown LIST return option {name}", r.tag)
            return name

        returns = set(r.paren(option, allow_empty=True))
    if "SUBSCRIBED" in select:
        returns.add("SUBSCRIBED")
    return ListCmd(reference, patterns, select, frozenset(returns), status, False, extended)


def _lsub(r: Reader) -> ListCmd:
    r.sp()
    try:
        reference = mutf7.decode(r.astring())
    except ValueError:
        raise ParseError("Bad reference name", r.tag) from None
    r.sp()
    return ListCmd(reference, (r.list_mailbox(),), lsub=True)


def _status(r: Reader) -> Status:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(mailbox, _status_items(r))


def _append(r: Reader) -> Append:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    if r.peek() not in (b"{", b"~"):
        raise r.error("message literal")
    message = r.literal()
    return Append(mailbox, flags, when, message)


def _copy(r: Reader) -> CopyMove:
    r.sp()
    seqset = r.seqset()
    r.sp()
    return CopyMove(seqset, r.mailbox())


def _seq_arg(r: Reader) -> SeqArg:
    r.sp()
    return SeqArg(r.seqset())


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ATTS = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY",
    "BODYSTRUCTURE", "UID", "MODSEQ",
}  # fmt: skip
_SECTION_TEXT = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}


def _section(r: Reader) -> Section:
    r.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    if r.peek().isdigit():
        part.append(r.nz_number())
        while r.peek(2)[:1] == b"." and r.peek(2)[1:].isdigit():
            r.pos += 1
            part.append(r.nz_number())
        if r.maybe(b"."):
            text = r._match(_FETCH_NAME, "section text").group().decode().upper()
    elif r.peek() != b"]":
        text = r._match(_FETCH_NAME, "section text").group().decode().upper()
    if text and (text not in _SECTION_TEXT or (text == "MIME" and not part)):
        raise r.error("section text (HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME)")
    if text.startswith("HEADER.FIELDS"):
        r.sp()
        fields = tuple(f.decode("latin-1").upper() for f in r.paren(r.astring))
        for f in fields:
            if not f or any(c <= " " or c in ':()"\\{' or c > "~" for c in f):
                raise r.error("header field name")
    r.expect(b"]")
    return Section(tuple(part), text, fields)


def _fetch_att(r: Reader) -> FetchAtt:
    name = r._match(_FETCH_NAME, "fetch attribute").group().decode().upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        section = _section(r)
        partial = None
        if r.maybe(b"<"):
            offset = r.number()
            r.expect(b".")
            partial = (offset, r.nz_number())
            r.expect(b">")
        return FetchAtt("BODY[]", section, name == "BODY.PEEK", partial)
    if name not in _SIMPLE_ATTS:
        raise ParseError(f"Unknown FETCH attribute {name}", r.tag)
    return FetchAtt(name)


def _fetch(r: Reader) -> Fetch:
    r.sp()
    seqset = r.seqset()
    r.sp()
    if r.peek() == b"(":
        atts = tuple(r.paren(lambda: _fetch_att(r)))
    else:
        save = r.pos
        word = r._match(_FETCH_NAME, "fetch attribute").group().decode().upper()
        if word in _MACROS:
            atts = tuple(FetchAtt(n) for n in _MACROS[word])
        else:
            r.pos = save
            atts = (_fetch_att(r),)
    changed_since = None
    if r.maybe(b" "):

        def modifier() -> int:
            nonlocal changed_since
            r.expect(b"CHANGEDSINCE")
            r.sp()
            changed_since = r.number(MAX_NUMBER)
            return changed_since

        r.paren(modifier)
    return Fetch(seqset, atts, changed_since)


def _store(r: Reader) -> Store:
    r.sp()
    seqset = r.seqset()
    r.sp()
    unchanged_since = None
    if r.peek() == b"(":
        r.expect(b"(UNCHANGEDSINCE ")
        unchanged_since = r.number(MAX_NUMBER)
        r.expect(b")")
        r.sp()
    op = "add" if r.maybe(b"+") else "remove" if r.maybe(b"-") else "replace"
    r.expect(b"FLAGS")
    silent = r.maybe(b".SILENT")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.maybe(b" "):
            flags.append(r.flag())
        flags = tuple(flags)
    return Store(seqset, op, silent, flags, unchanged_since)


def _id(r: Reader) -> Id:
    r.sp()
    if r.maybe(b"NIL"):
        return Id(None)
    items: list[bytes | None] = r.paren(lambda: r.nstring(), allow_empty=True)
    if len(items) % 2 or len(items) > 60:
        raise ParseError("ID takes up to 30 field-value pairs", r.tag)
    pairs = []
    for k, v in zip(items[::2], items[1::2], strict=True):
        if k is None or len(k) > 30 or (v is not None and len(v) > 1024):
            raise ParseError("ID field names are strings of up to 30 octets, values up to 1024", r.tag)
        pairs.append((k.decode("utf-8", "replace"), None if v is None else v.decode("utf-8", "replace")))
    return Id(tuple(pairs))


def _enable(r: Reader) -> Enable:
    caps = []
    while r.maybe(b" "):
        caps.append(r.keyword())
    if not caps:
        raise r.error("capability")
    return Enable(tuple(caps))


# --- SEARCH ------------------------------------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": (ANSWERED, True), "DELETED": (DELETED, True), "DRAFT": (DRAFT, True),
    "FLAGGED": (FLAGGED, True), "SEEN": (SEEN, True), "UNANSWERED": (ANSWERED, False),
    "UNDELETED": (DELETED, False), "UNDRAFT": (DRAFT, False), "UNFLAGGED": (FLAGGED, False),
    "UNSEEN": (SEEN, False),
}  # fmt: skip
_HEADER_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TO": "to"}
_DATE_KEYS = {
    "BEFORE": ("internal", "before"), "ON": ("internal", "on"), "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"), "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since"),
}  # fmt: skip
CHARSETS = {"UTF-8": "utf-8", "US-ASCII": "ascii"}
_ARG_KEYS = {*_HEADER_KEYS, *_DATE_KEYS, "BODY", "TEXT", "HEADER", "KEYWORD", "UNKEYWORD", "LARGER", "SMALLER",
             "NOT", "OR", "UID", "MODSEQ"}  # fmt: skip
MAX_SEARCH_DEPTH = 100


class _SearchParser:
    def __init__(self, r: Reader, charset: str):
        self.r, self.charset, self.depth, self.modseq = r, charset, 0, False

    def string(self) -> str:
        raw = self.r.astring()
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError:
            raise ParseError(f"Search string is not {self.charset}", self.r.tag) from None

    def keys(self) -> object:
        """One or more keys separated by spaces, up to the end of the command or a ')'."""
        keys = [self.key()]
        while self.r.peek() == b" ":
            self.r.pos += 1
            keys.append(self.key())
        return keys[0] if len(keys) == 1 else sk.And(tuple(keys))

    def key(self) -> object:
        r = self.r
        self.depth += 1
        if self.depth > MAX_SEARCH_DEPTH:
            raise ParseError("Search criteria nested too deeply", r.tag)
        try:
            c = r.peek()
            if c == b"(":
                r.pos += 1
                inner = self.keys()
                r.expect(b")")
                return inner
            if c.isdigit() or c == b"*":
                return SeqKey(r.seqset())
            name = r.keyword()
            return self.named(name)
        finally:
            self.depth -= 1

    def named(self, name: str) -> object:
        r = self.r
        if name == "ALL":
            return sk.All()
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return sk.Flag(flag, present)
        if name in ("RECENT", "OLD"):
            return RecentKey(name == "RECENT")
        if name == "NEW":
            return sk.And((RecentKey(True), sk.Flag(SEEN, False)))
        if name not in _ARG_KEYS:
            raise ParseError(f"Unknown search key {name[:40]}", r.tag)
        r.sp()
        if name in _HEADER_KEYS:
            return sk.Header(_HEADER_KEYS[name], self.string())
        if name in _DATE_KEYS:
            which, op = _DATE_KEYS[name]
            return sk.Date(which, op, r.date())
        if name in ("BODY", "TEXT"):
            return sk.Text(name.lower(), self.string())
        if name == "HEADER":
            field = r.astring().decode("latin-1").lower()
            r.sp()
            return sk.Header(field, self.string())
        if name in ("KEYWORD", "UNKEYWORD"):
            return sk.Flag(r.atom().decode("latin-1"), name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            return sk.Size(name.lower(), r.number())
        if name == "NOT":
            return sk.Not(self.key())
        if name == "OR":
            a = self.key()
            r.sp()
            return sk.Or(a, self.key())
        if name == "UID":
            return UidKey(r.seqset())
        if name == "MODSEQ":
            self.modseq = True
            if r.peek() == b'"':  # entry-name entry-type-req: "/flags/\\seen" all|shared|priv
                r.quoted()
                r.sp()
                if r.keyword() not in ("ALL", "SHARED", "PRIV"):
                    raise r.error("entry type (all, shared, priv)")
                r.sp()
            return sk.ModSeq(r.number(MAX_NUMBER))
        raise ParseError(f"Unknown search key {name}", r.tag)


def _search(r: Reader) -> Search:
    r.sp()
    charset = None
    if r.peek(8).upper() == b"CHARSET ":
        r.pos += 8
        charset = r.astring().decode("latin-1").upper()
        if charset not in CHARSETS:
            raise ParseError("Unsupported charset", r.tag, "NO", "BADCHARSET (UTF-8 US-ASCII)")
        r.sp()
    p = _SearchParser(r, CHARSETS.get(charset or "UTF-8", "utf-8"))
    key = p.keys()
    return Search(key, charset, p.modseq)


# name -> argument parser; the session's COMMANDS table says who may run what, when.
ARGUMENTS = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none, "AUTHENTICATE": _authenticate,
    "LOGIN": _login, "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_arg,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_arg, "UNSUBSCRIBE": _mailbox_arg, "LIST": _list, "LSUB": _lsub,
    "STATUS": _status, "APPEND": _append, "CHECK": _none, "CLOSE": _none, "EXPUNGE": _none,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "UNSELECT": _none,
    "IDLE": _none, "NAMESPACE": _none, "ID": _id, "ENABLE": _enable,
    "UID COPY": _copy, "UID MOVE": _copy, "UID FETCH": _fetch, "UID SEARCH": _search, "UID STORE": _store,
    "UID EXPUNGE": _seq_arg,
}  # fmt: skip


def parse(data: bytes) -> Command:
    """One framed command (see Framer) -> Command. ParseError (with the tag when there is one) otherwise."""
    m = _TAG.match(data)
    if m is None or (m.end() < len(data) and data[m.end() : m.end() + 1] != b" "):
        raise ParseError("Missing or invalid tag", "*")
    tag = m.group().decode("latin-1")
    if m.end() == len(data):
        raise ParseError("Missing command", tag)
    r = Reader(data, m.end() + 1, tag)
    name = r.keyword() if _ATOM.match(data, r.pos) else ""
    if not name:
        raise ParseError("Missing command", tag)
    if name == "UID":
        r.sp()
        name = "UID " + r.keyword()
    fn = ARGUMENTS.get(name)
    if fn is None:
        raise ParseError(f"Unknown command {name[:40]}", tag)
    args = fn(r)
    r.end()
    return Command(tag, name, args)
