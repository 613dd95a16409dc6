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
import itertools
import logging
import quopri
import threading
from datetime import UTC, datetime

import orjson

from mailflow import mime
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
    each as (name, casefolded value): what HEADER and TEXT compare against. A client that polls with
    `UID SEARCH HEADER ...` would otherwise have every message's stored parse read, decompressed and
    decoded on every poll. Bounded; the oldest entries go first. Shared by the store's threads."""

    def __init__(self, max_entries: int = 20_000):
        self.max_entries = max_entries
        self._items: dict[bytes, tuple[tuple[str, str], ...]] = {}
        self._lock = threading.Lock()

    def get(self, sha: bytes) -> tuple[tuple[str, str], ...] | None:
        return self._items.get(sha)

    def put(self, sha: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            if len(self._items) >= self.max_entries:
                for old in list(itertools.islice(self._items, max(1, self.max_entries // 10))):
                    del self._items[old]
            self._items[sha] = headers

    def __len__(self) -> int:
        return len(self._items)


HEADERS = HeaderCache()


def folded_headers(parsed: bytes) -> tuple[tuple[str, str], ...]:
    flat = orjson.loads(unpack(parsed))[3]
    return tuple((flat[i], flat[i + 1].casefold()) for i in range(0, len(flat), 2))


class _Candidate:
    """One message as the Python matcher sees it; the parse and the body are loaded on demand.
    `parsed` is None when the search needs headers only and they are in `HEADERS` (or None)."""

    __slots__ = ("uid", "flags", "keywords", "modseq", "size", "internal_date", "sent_day", "_parsed", "_locator",
                 "_sha", "_blobs", "_headers", "_tree", "_raw")  # fmt: skip

    def __init__(self, row, blobs, headers: tuple[tuple[str, str], ...] | None = None):
        (self.uid, self.flags, self.keywords, self.modseq, self.size, self.internal_date, self.sent_day,
         self._parsed, self._locator, self._sha) = row  # fmt: skip
        self._blobs = blobs
        self._headers, self._tree, self._raw = headers, None, None

    def headers(self) -> tuple[tuple[str, str], ...]:
        """(name, casefolded value) pairs."""
        if self._headers is None:
            self._headers = folded_headers(self._parsed)
            HEADERS.put(bytes(self._sha), self._headers)
        return self._headers

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._blobs.get(self._locator)
        return self._raw

    def tree(self) -> mime.ParsedMessage:
        if self._tree is None:
            self._tree = mime.from_json(unpack(self._parsed))
        return self._tree


def _matches(k: s.SearchKey, c: _Candidate, kws: Keywords) -> bool:
    match k:
        case s.All():
            return True
        case s.And(keys=keys):
            return all(_matches(x, c, kws) for x in keys)
        case s.Or(a=a, b=b):
            return _matches(a, c, kws) or _matches(b, c, kws)
        case s.Not(key=key):
            return not _matches(key, c, kws)
        case s.Uids(ranges=ranges):
            return c.uid in UidSet(ranges)
        case s.Flag(flag=flag, present=present):
            sysflag = names.system_flag(flag)
            if sysflag is not None:
                has = bool(c.flags & names.FLAG_BITS[sysflag])
            else:
                bit = kws.by_lower.get(flag.lower())
                has = bit is not None and bool(c.keywords & (1 << bit))
            return has == present
        case s.Size(op=op, n=n):
            return c.size > n if op == "larger" else c.size < n
        case s.ModSeq(n=n):
            return c.modseq >= n
        case s.Date(which="internal", op=op, day=day):
            d = datetime.fromtimestamp(c.internal_date, UTC).date()
            return d < day if op == "before" else d >= day if op == "since" else d == day
        case s.Date(which="sent", op=op, day=day):
            if c.sent_day is None:
                return False
            o = day.toordinal()
            return c.sent_day < o if op == "before" else c.sent_day >= o if op == "since" else c.sent_day == o
        case s.Header(field=field, value=value):
            needle = value.casefold()
            return any(name == field and needle in v for name, v in c.headers())
        case s.Text(where=where, value=value):
            needle = value.casefold()
            if where == "text" and any(needle in f"{n.casefold()}: {v}" for n, v in c.headers()):
                return True
            try:
                return any(needle in text.casefold() for text in body_texts(c.raw(), c.tree().body))
            except Exception:
                log.warning("body not searchable", exc_info=True, extra={"uid": c.uid})
                return False
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
    cols = "m.uid, m.flags, m.keywords, m.modseq, m.size, m.internal_date, b.sent_day"
    join = f" FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :mb AND {where} ORDER BY m.uid"
    if _needs_body(key):
        rows = tx.all(f"SELECT {cols}, b.parsed, b.locator, b.sha256{join}", params)
        return [r[0] for r in rows if _matches(key, _Candidate(r, blobs), kws)]
    # headers only: the stored parse is read for the bodies whose headers are not cached yet
    rows = tx.all(f"SELECT {cols}, NULL, b.locator, b.sha256, b.id{join}", params)
    shas = [bytes(r[9]) for r in rows]
    cached = [HEADERS.get(sha) for sha in shas]
    missing = list({r[10] for r, h in zip(rows, cached, strict=True) if h is None})
    parsed: dict[int, bytes] = {}
    for i in range(0, len(missing), 500):
        part = {f"b{k}": v for k, v in enumerate(missing[i : i + 500])}
        marks = ", ".join(f":{k}" for k in part)
        parsed.update(tx.all(f"SELECT id, parsed FROM blobs WHERE id IN ({marks})", part))
    out = []
    for r, sha, h in zip(rows, shas, cached, strict=True):
        row = (*r[:7], parsed.get(r[10]), r[8], sha)
        if _matches(key, _Candidate(row, blobs, h), kws):
            out.append(r[0])
    return out


def _needs_body(k: s.SearchKey) -> bool:
    """Does matching `k` need a message's body (BODY/TEXT), beyond its header fields and columns?"""
    return any(isinstance(x, s.Text) for x in s.leaves(k))
