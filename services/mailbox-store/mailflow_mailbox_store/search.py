"""SEARCH in the store: the criteria of mailflow.store.search pushed into SQL as far as they go, then
that module's evaluator (`matcher`: what each criterion means is written there, once) over the rows.

Flags, keywords, UIDs, sizes, internal and sent dates and MODSEQ are columns: they become SQL exactly
(dates through search.date_range, the rule the evaluator uses). HEADER and BODY/TEXT need the message:
in SQL they become TRUE, so the SQL selects a superset (a NOT over such a key also becomes TRUE), and
the candidates are then checked by the evaluator against the stored parse (header fields, decoded,
cached per body in HEADERS) and, for BODY/TEXT, the body itself, read in the search's own transaction
(PostgresBlobs) or from its segment. A body that is missing (BlobMissing) makes its message not match
(logged); it never fails the whole search. A failure of the database or the disk while reading one
does: the answer would be wrong, not short of one message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import orjson

from mailflow import mime
from mailflow.cache import Cache
from mailflow.store import search as s
from mailflow_mailbox_store import folders, keywords, names
from mailflow_mailbox_store.blobs import BlobMissing, BlobStore
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.keywords import Keywords
from mailflow_mailbox_store.parsing import unpack
from mailflow_mailbox_store.uidset import UidSet

log = logging.getLogger(__name__)


class _Sql:
    def __init__(self, kws: Keywords):
        self.kws = kws
        self.params: dict = {}
        self.needs_blob = False

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
            case s.EmailId(id=i):
                return f"m.blob_id = {self.p(i)}", True
            case s.Date(which=which):
                low, high = s.date_range(k)
                if which == "internal":
                    terms = []
                    column = "m.internal_date"
                elif which == "saved":  # NULL (saved before the store kept save dates) matches none
                    terms, column = ["m.saved_at IS NOT NULL"], "m.saved_at"
                else:
                    self.needs_blob = True  # sent dates live in blobs
                    terms, column = ["b.sent_day IS NOT NULL"], "b.sent_day"
                if low is not None:
                    terms.append(f"{column} >= {self.p(low)}")
                if high is not None:
                    terms.append(f"{column} < {self.p(high)}")
                return "(" + " AND ".join(terms) + ")", True
            case s.Header() | s.Address() | s.Text():
                return "1 = 1", False
        raise ValueError(f"unknown search key {k!r}")


class HeaderCache:
    """Header fields of bodies, by the body's SHA-256 (content-addressed: an entry never goes stale), as
    the search.Fields that HEADER, FROM/TO/CC/BCC and TEXT compare against. A client that polls with
    `UID SEARCH HEADER ...` would otherwise have every message's stored parse read, decompressed and
    decoded on every poll. Bounded, the least recently used first out; shared by the store's threads."""

    def __init__(self, max_entries: int = 20_000):
        self._items: Cache[bytes, s.Fields] = Cache(max_entries)
        self._lock = threading.Lock()

    def get(self, sha: bytes) -> tuple[tuple[str, str], ...] | None:
        [entry] = self.entries([sha])
        return None if entry is None else entry.pairs

    def entries(self, shas: Iterable[bytes]) -> list[s.Fields | None]:
        with self._lock:
            return [self._items.get(sha) for sha in shas]

    def put(self, sha: bytes, entry: s.Fields) -> s.Fields:
        with self._lock:
            self._items.put(sha, entry)
        return entry

    def __len__(self) -> int:
        return len(self._items)


HEADERS = HeaderCache()


def stored_fields(parsed: bytes) -> s.Fields:
    """The stored parse's header fields (name, folded value) and the address texts of its envelope's
    from, to, cc and bcc (search.address_texts), read without building the whole parse."""
    _, env, _, flat = orjson.loads(unpack(parsed))
    pairs = tuple((flat[i], s.fold(flat[i + 1])) for i in range(0, len(flat), 2))
    lists = (env[2], env[5], env[6], env[7])  # mime.to_json's envelope: from, to, cc, bcc
    addresses = {
        field: s.address_texts(mime.Address(*a) for a in items)
        for field, items in zip(s.ADDRESS_FIELDS, lists, strict=True)
        if items
    }
    return s.Fields(pairs, addresses)


class _Candidate:
    """One row as the evaluator sees it (a search.Message); the parse and the body are loaded on demand.
    `parsed` is None when the search needs headers only and they are in `HEADERS` (or None)."""

    __slots__ = ("uid", "_bits", "_kw", "modseq", "size", "internal_date", "sent_day", "saved_at", "_parsed",
                 "_locator", "_sha", "email_id", "_read", "_kws", "_fields", "_tree", "_raw")  # fmt: skip

    def __init__(self, row, read: Callable[[str], bytes], kws: Keywords, fields: s.Fields | None = None):
        (self.uid, self._bits, self._kw, self.modseq, self.size, self.internal_date, self.sent_day,
         self.saved_at, self._parsed, self._locator, self._sha, self.email_id) = row  # fmt: skip
        self._read, self._kws, self._fields = read, kws, fields
        self._tree: mime.ParsedMessage | None = None
        self._raw: bytes | None = None

    @property
    def flags(self) -> frozenset[str]:
        return self._kws.flags(self._bits, self._kw)

    def fields(self) -> s.Fields:
        if self._fields is None:
            self._fields = HEADERS.put(bytes(self._sha), stored_fields(self._parsed))
        return self._fields

    def texts(self):
        if self._tree is None:
            self._tree = mime.from_json(unpack(self._parsed))
        if self._raw is None:
            self._raw = self._read(self._locator)
        return s.body_texts(self._raw, self._tree.body)


def search(tx: Tx, user_id: int, mailbox_id: int, key: s.SearchKey, blobs: BlobStore) -> list[int]:
    folders.by_id(tx, user_id, mailbox_id)
    kws = keywords.load(tx, user_id)
    failures: list[Exception] = []

    def read(locator: str) -> bytes:
        try:
            return blobs.get(locator, tx)
        except BlobMissing:
            raise
        except Exception as exc:
            failures.append(exc)
            raise

    q = _Sql(kws)
    where, exact = q.build(key)
    params = {"mb": mailbox_id, **q.params}
    if exact:
        join = " JOIN blobs b ON b.id = m.blob_id" if q.needs_blob else ""
        rows = tx.all(
            f"SELECT m.uid FROM messages m{join} WHERE m.mailbox_id = :mb AND {where} ORDER BY m.uid", params
        )
        return [r[0] for r in rows]
    match = s.matcher(key)
    cols = "m.uid, m.flags, m.keywords, m.modseq, m.size, m.internal_date, b.sent_day, m.saved_at"
    join = f" FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :mb AND {where} ORDER BY m.uid"
    if _needs_body(key):
        rows = tx.all(f"SELECT {cols}, b.parsed, b.locator, b.sha256, b.id{join}", params)
        found = [r[0] for r in rows if match(_Candidate(r, read, kws))]
        if failures:
            raise failures[0]
        return found
    # headers only: the stored parse is read for the bodies whose headers are not cached yet
    if all(isinstance(x, s.Header | s.Address) for x in s.leaves(key)):  # header fields only: fewer columns
        cols = "m.uid, 0, 0, 0, 0, 0, NULL, NULL"
    rows = tx.all(f"SELECT {cols}, NULL, NULL, b.sha256, b.id{join}", params)
    cached = HEADERS.entries([bytes(r[10]) for r in rows])
    missing = list({r[11] for r, h in zip(rows, cached, strict=True) if h is None})
    parsed: dict[int, bytes] = {}
    for i in range(0, len(missing), 500):
        part = {f"b{k}": v for k, v in enumerate(missing[i : i + 500])}
        marks = ", ".join(f":{k}" for k in part)
        parsed.update(tx.all(f"SELECT id, parsed FROM blobs WHERE id IN ({marks})", part))
    out = []
    for r, h in zip(rows, cached, strict=True):
        row = r if h is not None else (*r[:8], parsed.get(r[11]), None, r[10], r[11])
        if match(_Candidate(row, read, kws, h)):
            out.append(r[0])
    return out


def _needs_body(k: s.SearchKey) -> bool:
    """Does matching `k` need a message's body (BODY/TEXT), beyond its header fields and columns?"""
    return any(isinstance(x, s.Text) for x in s.leaves(k))
