"""IMAP SEARCH: the criteria as a small tree, and the one place that says what each criterion means.

The IMAP parser builds the tree; sequence numbers, `*`, RECENT/NEW/OLD and `$` are resolved by the session
into `Uids` before it reaches the store. Every key serialises to a JSON-able dict (`to_obj`) and back
(`from_obj`), which raises `ValueError` for anything unknown, so a malformed request is a 422, never a
silent match-all.

`matcher(key)` is the evaluator, RFC 3501 §6.4.4 (RFC 9051 §6.4.4 says the same) and RFC 7162 MODSEQ:
  flags and keywords  compare case-insensitively (RFC 3501 §9 note 6): KEYWORD $label finds $Label
  HEADER / BODY / TEXT  case-insensitive substring (`fold`) of the decoded text: header values with their
                      RFC 2047 words decoded, body text parts decoded from their transfer encoding and
                      charset (`body_texts`). HEADER looks at every occurrence of its field and no other;
                      HEADER x "" matches a message that has the field. TEXT also sees "name: value".
  FROM / TO / CC / BCC  "the envelope structure's FROM field": a case-insensitive substring of the
                      field's decoded text (as HEADER) or of one of its addresses as parsed
                      (`address_texts`): the display name (RFC 2047 decoded, quotes and comments gone),
                      local@domain with the local part unquoted, "name <local@domain>", a group's name.
  BEFORE / ON / SINCE  the internal date's day, "disregarding time and timezone": the store keeps the
                      instant, so its UTC day (the day FETCH INTERNALDATE shows, in +0000)
  SENTBEFORE / SENTON / SENTSINCE  the Date: header's day in the header's own zone (`sent_day`);
                      a message without a readable Date: matches none of them
  SAVEDBEFORE / SAVEDON / SAVEDSINCE  RFC 8514: the save date's UTC day, as the internal date's; a
                      message saved before the store kept save dates (FETCH SAVEDATE NIL) matches none
  LARGER / SMALLER    RFC822.SIZE strictly greater / smaller
A body that cannot be read makes its message not match BODY/TEXT (logged); it never fails the search.
mailbox-store runs it over the candidates its SQL selects (`date_range` is the same rule for both),
and imap-pop3 over its view when a search names only flags and UIDs.
"""

from __future__ import annotations

import codecs
import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Literal, Protocol

from mailflow import mime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class And:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or:
    a: SearchKey
    b: SearchKey


@dataclass(frozen=True)
class Not:
    key: SearchKey


@dataclass(frozen=True)
class Uids:
    ranges: tuple[tuple[int, int], ...]  # inclusive (low, high), low <= high


@dataclass(frozen=True)
class Flag:
    flag: str  # "\\Seen" or a keyword
    present: bool = True


@dataclass(frozen=True)
class Header:
    field: str  # lower case, e.g. "from", "subject", "x-spam"
    value: str  # case-insensitive substring; "" matches any message that has the field


@dataclass(frozen=True)
class Address:
    field: Literal["from", "to", "cc", "bcc"]
    value: str  # case-insensitive substring of the field's text or of one of its addresses


ADDRESS_FIELDS = ("from", "to", "cc", "bcc")


@dataclass(frozen=True)
class Text:
    where: Literal["body", "text"]  # BODY: the body only; TEXT: header and body
    value: str


DATE_KINDS = ("internal", "sent", "saved")


@dataclass(frozen=True)
class Date:
    which: Literal["internal", "sent", "saved"]  # BEFORE/ON/SINCE, SENTBEFORE/..., SAVEDBEFORE/... (RFC 8514)
    op: Literal["before", "on", "since"]
    day: date


@dataclass(frozen=True)
class Size:
    op: Literal["larger", "smaller"]
    n: int


@dataclass(frozen=True)
class ModSeq:
    n: int  # RFC 7162: messages with modseq >= n


@dataclass(frozen=True)
class EmailId:
    id: int  # RFC 8474 EMAILID: the message's content (its body's id in the store; copies share it)


SearchKey = All | And | Or | Not | Uids | Flag | Header | Address | Text | Date | Size | ModSeq | EmailId


def leaves(k: SearchKey) -> Iterator[SearchKey]:
    """The criteria under And, Or and Not: what a reader checks to know which data a search needs."""
    match k:
        case And(keys=keys):
            for x in keys:
                yield from leaves(x)
        case Or(a=a, b=b):
            yield from leaves(a)
            yield from leaves(b)
        case Not(key=key):
            yield from leaves(key)
        case _:
            yield k


def to_obj(k: SearchKey) -> dict:
    match k:
        case All():
            return {"k": "all"}
        case And(keys=keys):
            return {"k": "and", "keys": [to_obj(x) for x in keys]}
        case Or(a=a, b=b):
            return {"k": "or", "a": to_obj(a), "b": to_obj(b)}
        case Not(key=key):
            return {"k": "not", "key": to_obj(key)}
        case Uids(ranges=ranges):
            return {"k": "uids", "ranges": [list(r) for r in ranges]}
        case Flag(flag=flag, present=present):
            return {"k": "flag", "flag": flag, "present": present}
        case Header(field=f, value=v):
            return {"k": "header", "field": f, "value": v}
        case Address(field=f, value=v):
            return {"k": "address", "field": f, "value": v}
        case Text(where=w, value=v):
            return {"k": "text", "where": w, "value": v}
        case Date(which=which, op=op, day=day):
            return {"k": "date", "which": which, "op": op, "day": day.isoformat()}
        case Size(op=op, n=n):
            return {"k": "size", "op": op, "n": n}
        case ModSeq(n=n):
            return {"k": "modseq", "n": n}
        case EmailId(id=i):
            return {"k": "emailid", "id": i}
    raise ValueError(f"not a search key: {k!r}")


def from_obj(o: dict) -> SearchKey:
    try:
        match o["k"]:
            case "all":
                return All()
            case "and":
                return And(tuple(from_obj(x) for x in o["keys"]))
            case "or":
                return Or(from_obj(o["a"]), from_obj(o["b"]))
            case "not":
                return Not(from_obj(o["key"]))
            case "uids":
                ranges = tuple((int(a), int(b)) for a, b in o["ranges"])
                if any(a > b or a < 1 for a, b in ranges):
                    raise ValueError("bad uid range")
                return Uids(ranges)
            case "flag":
                return Flag(str(o["flag"]), bool(o.get("present", True)))
            case "header":
                return Header(str(o["field"]).lower(), str(o["value"]))
            case "address":
                if o["field"] not in ADDRESS_FIELDS:
                    raise ValueError("bad address field")
                return Address(o["field"], str(o["value"]))
            case "text":
                if o["where"] not in ("body", "text"):
                    raise ValueError("bad text key")
                return Text(o["where"], str(o["value"]))
            case "date":
                if o["which"] not in DATE_KINDS or o["op"] not in ("before", "on", "since"):
                    raise ValueError("bad date key")
                return Date(o["which"], o["op"], date.fromisoformat(o["day"]))
            case "size":
                if o["op"] not in ("larger", "smaller"):
                    raise ValueError("bad size key")
                return Size(o["op"], int(o["n"]))
            case "modseq":
                return ModSeq(int(o["n"]))
            case "emailid":
                return EmailId(int(o["id"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed search key: {exc}") from exc
    raise ValueError(f"unknown search key {o.get('k')!r}")


# --- what each criterion means: the one evaluator ---------------------------------------------------

DAY_SECONDS = 86_400


def fold(text: str) -> str:
    """How SEARCH compares text: case-insensitively, beyond ASCII too ("STRASSE" finds "Straße")."""
    return text.casefold()


@lru_cache(maxsize=4096)
def sent_day(date_header: str | None) -> int | None:
    """The day of a Date: header in the header's own zone, as a proleptic ordinal (what SENT* compare);
    None when there is no header or it cannot be read."""
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).date().toordinal()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def date_range(k: Date) -> tuple[int | None, int | None]:
    """The message dates `k` selects, as [low, high) with None for no bound: Unix seconds of the internal
    date or the save date (its UTC day) for BEFORE/ON/SINCE and SAVED*, `sent_day` ordinals for
    SENTBEFORE/SENTON/SENTSINCE."""
    if k.which != "sent":
        first, width = int(datetime(k.day.year, k.day.month, k.day.day, tzinfo=UTC).timestamp()), DAY_SECONDS
    else:
        first, width = k.day.toordinal(), 1
    if k.op == "before":
        return None, first
    if k.op == "since":
        return first, None
    return first, first + width


class Fields:
    """A message's header fields as HEADER, TEXT and FROM/TO/CC/BCC compare them: `pairs` (lower-case
    name, folded value) in order, `by_name` (name -> its folded values, every occurrence), and
    `addresses` (from/to/cc/bcc -> the folded `address_texts` of the envelope's addresses)."""

    __slots__ = ("pairs", "by_name", "addresses")

    def __init__(
        self, pairs: tuple[tuple[str, str], ...], addresses: dict[str, tuple[str, ...]] | None = None
    ):
        self.pairs = pairs
        by_name: dict[str, tuple[str, ...]] = {}
        for name, value in pairs:
            by_name[name] = (*by_name.get(name, ()), value)
        self.by_name = by_name
        self.addresses = addresses or {}

    @classmethod
    def of(cls, headers: Iterable[tuple[str, str]], envelope: mime.Envelope | None = None) -> Fields:
        """From mailflow.mime's ParsedMessage.headers (names in lower case, RFC 2047 words decoded) and
        its envelope."""
        addresses = {}
        if envelope is not None:
            lists = (envelope.from_, envelope.to, envelope.cc, envelope.bcc)
            addresses = {f: address_texts(a) for f, a in zip(ADDRESS_FIELDS, lists, strict=True) if a}
        return cls(tuple((name, fold(value)) for name, value in headers), addresses)


def address_texts(addresses: Iterable[mime.Address]) -> tuple[str, ...]:
    """What FROM/TO/CC/BCC look in besides the field's text, folded, for each address (RFC 3501 address
    structures as mailflow.mime parsed them): its display name with RFC 2047 words decoded,
    local@domain with the local part unquoted, and "name <local@domain>"; a group's name."""
    out: list[str] = []
    for a in addresses:
        if a.host is None:  # a group's start (its name is in `mailbox`) or end
            if a.mailbox:
                out.append(fold(mime.decode_words(a.mailbox)))
            continue
        local = a.mailbox or ""
        if len(local) > 1 and local[0] == local[-1] == '"':
            local = mime.unescape(local[1:-1])
        spec = f"{local}@{a.host}" if a.host else local
        name = mime.decode_words(a.name) if a.name else ""
        out += (fold(name), fold(spec), fold(f"{name} <{spec}>")) if name else (fold(spec),)
    return tuple(out)


def _decode(raw: bytes, part: mime.BodyPart) -> str:
    data = raw[part.body_start : part.end]
    try:
        data = mime.decode_transfer(data, part.encoding)
    except ValueError:  # an encoding we do not know: searched as it is
        pass
    charset = dict(part.params).get("CHARSET", "us-ascii")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "latin-1"
    return data.decode(charset, errors="replace")


def body_texts(raw: bytes, part: mime.BodyPart) -> Iterator[str]:
    """What BODY looks in: the decoded text of every text/* leaf part (and attached messages as text)."""
    if part.parts:
        for child in part.parts:
            yield from body_texts(raw, child)
        return
    if part.type == "TEXT":
        yield _decode(raw, part)
    elif part.type == "MESSAGE":
        yield raw[part.body_start : part.end].decode("utf-8", errors="replace")


class Message(Protocol):
    """What the evaluator reads of one message. A reader fills in only what its criteria need: imap-pop3's
    view has UIDs and flags, so it evaluates only criteria made of All, Uids and Flag (`flags_only`)."""

    uid: int
    flags: frozenset[str]
    modseq: int
    size: int
    internal_date: int  # Unix seconds
    sent_day: int | None  # see sent_day()
    saved_at: int | None  # Unix seconds; None for a message stored before save dates were kept
    email_id: int  # EmailId compares it

    def fields(self) -> Fields: ...

    def texts(self) -> Iterable[str]:
        """body_texts() of the message; may raise if the body cannot be read."""
        ...


Matcher = Callable[[Message], bool]


def flags_only(k: SearchKey) -> bool:
    """Does `k` name only flags and UIDs (what a session's view of a mailbox knows)?"""
    return all(isinstance(x, All | Uids | Flag) for x in leaves(k))


def _in_ranges(ranges: tuple[tuple[int, int], ...]) -> Callable[[int], bool]:
    if len(ranges) == 1:
        ((low, high),) = ranges
        return lambda u: low <= u <= high
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    lows, highs = [r[0] for r in merged], [r[1] for r in merged]

    def contains(u: int) -> bool:
        i = bisect_right(lows, u) - 1
        return i >= 0 and u <= highs[i]

    return contains


def _has_flag(flag: str) -> Callable[[frozenset[str]], bool]:
    """Case-insensitive membership, remembered per flag set (a mailbox has few distinct ones)."""
    want = flag.lower()
    seen: dict[frozenset[str], bool] = {}

    def has(flags: frozenset[str]) -> bool:
        found = seen.get(flags)
        if found is None:
            found = seen[flags] = flag in flags or any(f.lower() == want for f in flags)
        return found

    return has


def _between(low: int | None, high: int | None) -> Callable[[int | None], bool]:
    if low is None:
        return lambda v: v is not None and v < high
    if high is None:
        return lambda v: v is not None and v >= low
    return lambda v: v is not None and low <= v < high


def matcher(k: SearchKey) -> Matcher:
    """`k` as one function of a message, built once per search (not walked again for every message)."""
    match k:
        case All():
            return lambda m: True
        case And(keys=keys):
            fs = tuple(matcher(x) for x in keys if not isinstance(x, All))
            if not fs:
                return lambda m: True
            if len(fs) == 1:
                return fs[0]
            if len(fs) == 2:
                f1, f2 = fs
                return lambda m: f1(m) and f2(m)
            return lambda m: all(f(m) for f in fs)
        case Or(a=a, b=b):
            fa, fb = matcher(a), matcher(b)
            return lambda m: fa(m) or fb(m)
        case Not(key=key):
            f = matcher(key)
            return lambda m: not f(m)
        case Uids(ranges=ranges):
            inside = _in_ranges(ranges)
            return lambda m: inside(m.uid)
        case Flag(flag=flag, present=present):
            has = _has_flag(flag)
            return (lambda m: has(m.flags)) if present else (lambda m: not has(m.flags))
        case Size(op=op, n=n):
            return (lambda m: m.size > n) if op == "larger" else (lambda m: m.size < n)
        case ModSeq(n=n):
            return lambda m: m.modseq >= n
        case EmailId(id=i):
            return lambda m: m.email_id == i
        case Date(which="internal"):
            within = _between(*date_range(k))
            return lambda m: within(m.internal_date)
        case Date(which="sent"):
            within = _between(*date_range(k))
            return lambda m: within(m.sent_day)
        case Date(which="saved"):
            within = _between(*date_range(k))
            return lambda m: within(m.saved_at)
        case Header(field=field, value=value):
            needle = fold(value)
            return lambda m: any(needle in v for v in m.fields().by_name.get(field, ()))
        case Address(field=field, value=value):
            needle = fold(value)

            def address(m: Message) -> bool:
                f = m.fields()
                return any(needle in v for v in f.by_name.get(field, ())) or any(
                    needle in v for v in f.addresses.get(field, ())
                )

            return address
        case Text(where=where, value=value):
            needle = fold(value)

            def text(m: Message) -> bool:
                if where == "text" and any(needle in f"{fold(n)}: {v}" for n, v in m.fields().pairs):
                    return True
                try:
                    return any(needle in fold(t) for t in m.texts())
                except Exception:
                    log.warning("body not searchable", exc_info=True, extra={"uid": m.uid})
                    return False

            return text
    raise ValueError(f"unknown search key {k!r}")
