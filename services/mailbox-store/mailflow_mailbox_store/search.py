"""SEARCH: the criteria tree of mailflow.store.search, pushed into SQL as far as it goes.

Flags, keywords, UIDs, sizes, internal and sent dates and MODSEQ are columns: they become SQL exactly.
HEADER and BODY/TEXT need the message: in SQL they become TRUE, so the SQL selects a superset (a NOT
over such a key also becomes TRUE), and the candidates are then checked exactly in Python, against
the stored parse (headers, decoded) and, for BODY/TEXT, the body's text parts decoded from their
transfer encoding and charset. Matching is case-insensitive substring, as RFC 3501 §6.4.4 says.
Dates ignore time and zone: internal dates by their UTC day, sent dates by the Date: header's own day.
A body that cannot be read makes its message not match (logged); it never fails the whole search.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import quopri
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson

from mailflow import mime
from mailflow.cache import Cache
from mailflow.store import search as s
from mailflow_mailbox_store import folders, keywords, names
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.keywords import Keywords
from mailflow_mailbox_store.parsing import unpack
from mailflow_mailbox_store.uidset import UidSet

log = logging.getLogger(__name__)


class _Sql:
    def __init__(self, kws: Keywords):
        self.kws = kws
        self.params: dict = {}
        self.needs_blob = False  # sent dates live in blobs

    def p(self, value) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def build(self, k: s.SearchKey) -> tuple[str, bool]:
        """(SQL boolean expression, exact?). Inexact expressions select a superset."""
        match k:
            case s.All():
                return "1 = 1", True
            case s.And(keys=keys):
                if not keys:
                    return "1 = 1", True
                parts = [self.build(x) for x in keys]
                return "(" + " AND ".join(p for p, _ in parts) + ")", all(e for _, e in parts)
            case s.Or(a=a, b=b):
                (pa, ea), (pb, eb) = self.build(a), self.build(b)
                return f"({pa} OR {pb})", ea and eb
            case s.Not(key=key):
                p, exact = self.build(key)
                return (f"(NOT {p})", True) if exact else ("1 = 1", False)
            case s.Uids(ranges=ranges):
                u = UidSet(ranges)
                clause, params = u.sql("m.uid", prefix=f"u{len(self.params)}_")
                self.params.update(params)
                return "(1 = 1" + clause + ")", u.exact_in_sql
            case s.Flag(flag=flag, present=present):
                sysflag = names.system_flag(flag)
                if sysflag is not None:
                    expr = f"(m.flags & {names.FLAG_BITS[sysflag]}) != 0"
                else:
                    bit = self.kws.by_lower.get(flag.lower())
                    expr = f"(m.keywords & {self.p(1 << bit)}) != 0" if bit is not None else "1 = 0"
                return (expr if present else f"(NOT {expr})"), True
            case s.Size(op=op, n=n):
                return f"m.size {'>' if op == 'larger' else '<'} {self.p(n)}", True
            case s.ModSeq(n=n):
                return f"m.modseq >= {self.p(n)}", True
            case s.Date(which="internal", op=op, day=day):
                start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
                if op == "before":
                    return f"m.internal_date < {self.p(start)}", True
                if op == "since":
                    return f"m.internal_date >= {self.p(start)}", True
                return (
                    f"(m.internal_date >= {self.p(start)} AND m.internal_date < {self.p(start + 86_400)})",
                    True,
                )
            case s.Date(which="sent", op=op, day=day):
                cmp = {"before": "<", "on": "=", "since": ">="}[op]
                self.needs_blob = True
                return f"(b.sent_day IS NOT NULL AND b.sent_day {cmp} {self.p(day.toordinal())})", True
            case s.Header() | s.Text():
                return "1 = 1", False
        raise ValueError(f"unknown search key {k!r}")


class HeaderCache:
    """Header fields of bodies, by the body's SHA-256 (content-addressed: an entry never goes stale),
    each as (name, casefolded value): what HEADER and TEXT compare against, and the same values by
    field name (a HEADER criterion looks at its field only). A client that polls with
    `UID SEARCH HEADER ...` would otherwise have every message's stored parse read, decompressed and
    decoded on every poll. Bounded, the least recently used first out; shared by the store's threads."""

    def __init__(self, max_entries: int = 20_000):
        self._items: Cache[bytes, Fields] = Cache(max_entries)
        self._lock = threading.Lock()

    def get(self, sha: bytes) -> tuple[tuple[str, str], ...] | None:
        [entry] = self.entries([sha])
        return None if entry is None else entry.pairs

    def entries(self, shas: Iterable[bytes]) -> list[Fields | None]:
        with self._lock:
            return [self._items.get(sha) for sha in shas]

    def put(self, sha: bytes, headers: tuple[tuple[str, str], ...]) -> Fields:
        entry = Fields(headers)
        with self._lock:
            self._items.put(sha, entry)
        return entry

    def __len__(self) -> int:
        return len(self._items)


class Fields:
    """One body's header fields: `pairs` in order, and `by_name` (name -> its values)."""

    __slots__ = ("pairs", "by_name")

    def __init__(self, pairs: tuple[tuple[str, str], ...]):
        self.pairs = pairs
        by_name: dict[str, tuple[str, ...]] = {}
        for name, value in pairs:
            by_name[name] = (*by_name.get(name, ()), value)
        self.by_name = by_name


HEADERS = HeaderCache()


def folded_headers(parsed: bytes) -> tuple[tuple[str, str], ...]:
    flat = orjson.loads(unpack(parsed))[3]
    return tuple((flat[i], flat[i + 1].casefold()) for i in range(0, len(flat), 2))


class _Candidate:
    """One message as the Python matcher sees it; the parse and the body are loaded on demand.
    `parsed` is None when the search needs headers only and they are in `HEADERS` (or None)."""

    __slots__ = ("uid", "flags", "keywords", "modseq", "size", "internal_date", "sent_day", "_parsed", "_locator",
                 "_sha", "_blobs", "_fields", "_tree", "_raw")  # fmt: skip

    def __init__(self, row, blobs, fields: Fields | None = None):
        (self.uid, self.flags, self.keywords, self.modseq, self.size, self.internal_date, self.sent_day,
         self._parsed, self._locator, self._sha) = row  # fmt: skip
        self._blobs = blobs
        self._fields, self._tree, self._raw = fields, None, None

    def fields(self) -> Fields:
        if self._fields is None:
            self._fields = HEADERS.put(bytes(self._sha), folded_headers(self._parsed))
        return self._fields

    def headers(self) -> tuple[tuple[str, str], ...]:
        """(name, casefolded value) pairs."""
        return self.fields().pairs

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._blobs.get(self._locator)
        return self._raw

    def tree(self) -> mime.ParsedMessage:
        if self._tree is None:
            self._tree = mime.from_json(unpack(self._parsed))
        return self._tree


Matcher = Callable[[_Candidate], bool]


def _compile(k: s.SearchKey, kws: Keywords) -> Matcher:
    """The criteria tree as one function of a candidate, built once per search (not walked per message)."""
    match k:
        case s.All():
            return lambda c: True
        case s.And(keys=keys):
            fs = tuple(_compile(x, kws) for x in keys if not isinstance(x, s.All))
            if not fs:
                return lambda c: True
            if len(fs) == 1:
                return fs[0]
            if len(fs) == 2:
                f1, f2 = fs
                return lambda c: f1(c) and f2(c)
            return lambda c: all(f(c) for f in fs)
        case s.Or(a=a, b=b):
            fa, fb = _compile(a, kws), _compile(b, kws)
            return lambda c: fa(c) or fb(c)
        case s.Not(key=key):
            f = _compile(key, kws)
            return lambda c: not f(c)
        case s.Uids(ranges=ranges):
            u = UidSet(ranges)
            return lambda c: c.uid in u
        case s.Flag(flag=flag, present=present):
            sysflag = names.system_flag(flag)
            if sysflag is not None:
                mask = names.FLAG_BITS[sysflag]
                return lambda c: bool(c.flags & mask) == present
            bit = kws.by_lower.get(flag.lower())
            if bit is None:
                return lambda c: not present
            kmask = 1 << bit
            return lambda c: bool(c.keywords & kmask) == present
        case s.Size(op=op, n=n):
            return (lambda c: c.size > n) if op == "larger" else (lambda c: c.size < n)
        case s.ModSeq(n=n):
            return lambda c: c.modseq >= n
        case s.Date(which="internal", op=op, day=day):

            def internal(c: _Candidate) -> bool:
                d = datetime.fromtimestamp(c.internal_date, UTC).date()
                return d < day if op == "before" else d >= day if op == "since" else d == day

            return internal
        case s.Date(which="sent", op=op, day=day):
            o = day.toordinal()

            def sent(c: _Candidate) -> bool:
                if c.sent_day is None:
                    return False
                return c.sent_day < o if op == "before" else c.sent_day >= o if op == "since" else c.sent_day == o

            return sent
        case s.Header(field=field, value=value):
            needle = value.casefold()

            def header(c: _Candidate) -> bool:
                return any(needle in v for v in c.fields().by_name.get(field, ()))

            return header
        case s.Text(where=where, value=value):
            needle = value.casefold()

            def text(c: _Candidate) -> bool:
                if where == "text" and any(needle in f"{n.casefold()}: {v}" for n, v in c.headers()):
                    return True
                try:
                    return any(needle in t.casefold() for t in body_texts(c.raw(), c.tree().body))
                except Exception:
                    log.warning("body not searchable", exc_info=True, extra={"uid": c.uid})
                    return False

            return text
    raise ValueError(f"unknown search key {k!r}")


def _decode(raw: bytes, part: mime.BodyPart) -> str:
    data = raw[part.body_start : part.end]
    enc = part.encoding.upper()
    try:
        if enc == "BASE64":
            data = base64.b64decode(b"".join(data.split()), validate=False)
        elif enc == "QUOTED-PRINTABLE":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    charset = dict(part.params).get("CHARSET", "us-ascii")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "latin-1"
    return data.decode(charset, errors="replace")


def body_texts(raw: bytes, part: mime.BodyPart):
    """The decoded text of every text/* leaf part (and the headers of attached messages)."""
    if part.parts:
        for child in part.parts:
            yield from body_texts(raw, child)
        return
    if part.type == "TEXT":
        yield _decode(raw, part)
    elif part.type == "MESSAGE":
        yield raw[part.body_start : part.end].decode("utf-8", errors="replace")


def search(tx: Tx, user_id: int, mailbox_id: int, key: s.SearchKey, blobs) -> list[int]:
    folders.by_id(tx, user_id, mailbox_id)
    kws = keywords.load(tx, user_id)
    q = _Sql(kws)
    where, exact = q.build(key)
    params = {"mb": mailbox_id, **q.params}
    if exact:
        join = " JOIN blobs b ON b.id = m.blob_id" if q.needs_blob else ""
        rows = tx.all(
            f"SELECT m.uid FROM messages m{join} WHERE m.mailbox_id = :mb AND {where} ORDER BY m.uid", params
        )
        return [r[0] for r in rows]
    match = _compile(key, kws)
    cols = "m.uid, m.flags, m.keywords, m.modseq, m.size, m.internal_date, b.sent_day"
    join = f" FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :mb AND {where} ORDER BY m.uid"
    if _needs_body(key):
        rows = tx.all(f"SELECT {cols}, b.parsed, b.locator, b.sha256{join}", params)
        return [r[0] for r in rows if match(_Candidate(r, blobs))]
    # headers only: the stored parse is read for the bodies whose headers are not cached yet
    if all(isinstance(x, s.Header) for x in s.leaves(key)):  # nothing but header fields: fewer columns
        cols = "m.uid, 0, 0, 0, 0, 0, NULL"
    rows = tx.all(f"SELECT {cols}, NULL, NULL, b.sha256, b.id{join}", params)
    cached = HEADERS.entries([bytes(r[9]) for r in rows])
    missing = list({r[10] for r, h in zip(rows, cached, strict=True) if h is None})
    parsed: dict[int, bytes] = {}
    for i in range(0, len(missing), 500):
        part = {f"b{k}": v for k, v in enumerate(missing[i : i + 500])}
        marks = ", ".join(f":{k}" for k in part)
        parsed.update(tx.all(f"SELECT id, parsed FROM blobs WHERE id IN ({marks})", part))
    out = []
    for r, h in zip(rows, cached, strict=True):
        if match(_Candidate(r[:10] if h is not None else (*r[:7], parsed.get(r[10]), None, r[9]), blobs, h)):
            out.append(r[0])
    return out


def _needs_body(k: s.SearchKey) -> bool:
    """Does matching `k` need a message's body (BODY/TEXT), beyond its header fields and columns?"""
    return any(isinstance(x, s.Text) for x in s.leaves(k))
