"""SORT and THREAD (RFC 5256; DISPLAYFROM/DISPLAYTO of RFC 5957) over one mailbox, in the store.

Which messages: search.search, the one evaluation of the criteria. What is compared: the sort_* columns
of their bodies (sortkeys.py, filled when a body is stored). A body stored before migration 0012 has
them NULL: they are computed here from its stored parse and handed back (`Result.fill`), and the caller
writes them in a later write transaction (`fill`), so each old body is parsed once.

SORT: criteria applied from the last to the first by stable sorts over rows in UID order, so a tie on
every criterion keeps the mailbox order (RFC 5256 §3). DATE is the sent date, or the internal date for
a message without a readable Date: (§2.2).

THREAD returns each thread as a preorder of (uid, depth), uid 0 for a dummy (a thread whose root is
a missing message), so nothing is nested on the wire and no step recurses: a reply chain 10,000 deep
costs what a flat list does. ORDEREDSUBJECT and REFERENCES are RFC 5256 §4 step by step. Bounds:
each message contributes at most sortkeys.MAX_REFS parents, and at most REFS_BUDGET over a whole
mailbox (per message fewer when the mailbox is large), so the id table is at most REFS_BUDGET plus one
entry per message; the loop check of step 1 walks at most MAX_WALK ancestors and otherwise refuses the
link (as for a loop).

Kept in memory (per process, bounded): each mailbox's rows while its set of messages is unchanged
(RowCache; new mail extends them) and the answers for criteria that read no flags (ResultCache).
Measured in tests/bench/bench_sort.py (10,000 messages).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from mailflow import mime
from mailflow.cache import Cache
from mailflow.store import search as sk
from mailflow.store.api import SORT_CRITERIA, THREAD_ALGORITHMS
from mailflow_mailbox_store import folders, sortkeys
from mailflow_mailbox_store.blobs import BlobStore
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.parsing import unpack
from mailflow_mailbox_store.search import search

CRITERIA = SORT_CRITERIA  # the names, in mailflow.store.api
ALGORITHMS = THREAD_ALGORITHMS
REFS_BUDGET = 200_000  # parents followed in one THREAD REFERENCES, all messages together
MAX_WALK = 2_000  # ancestors looked at when checking that a link makes no loop


class Row:
    """One message as SORT and THREAD read it: `k` is its body's keys (sortkeys.COLUMNS order, the
    parents split), shared by every message with that body."""

    __slots__ = ("uid", "size", "internal", "sent", "k")

    def __init__(self, uid: int, size: int, internal: int, k: tuple):
        self.uid, self.size, self.internal, self.k = uid, size, internal, k
        self.sent = internal if k[2] is None else k[2]  # RFC 5256 §2.2: no Date:, the internal date

    @property
    def reply(self) -> bool:
        return bool(self.k[1])


@dataclass
class Result:
    rows: list[Row]
    fill: list[tuple] = field(default_factory=list)  # (blob id, *SortKeys.row()) for bodies without keys


class RowCache:
    """Each mailbox's rows (UID order) as SORT and THREAD read them, kept while the mailbox's set of
    messages is the same: under (mailbox id, UIDVALIDITY, UIDNEXT, the last expunge's MODSEQ, the
    number of messages). A new message moves UIDNEXT, an expunge or move leaves a tombstone with a
    new MODSEQ, a mailbox emptied or made again changes the count or UIDVALIDITY; flag changes keep
    the rows (SORT and THREAD do not read flags), so a client sorting again after marking mail read
    costs two index lookups and a count; after new mail only the new messages are read. Without it a
    SORT of 10,000 messages reads ten columns of 10,000 bodies each time. Bounded by the bytes held
    (`_weight`, least recently used mailbox out); shared by
    the store's threads; per process (each store process checks against the database)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self._items: Cache[tuple, list[Row]] = Cache(max_bytes)
        self._latest: dict[int, tuple] = {}  # mailbox id -> the state last put for it
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[Row] | None:
        with self._lock:
            return self._items.get(key)

    def earlier(self, key: tuple) -> tuple[int, list[Row]] | None:
        """(UIDNEXT then, rows) of an earlier state of the mailbox of `key` that `key` only adds
        messages to (same UIDVALIDITY, no expunge since): new mail is read alone, not the mailbox."""
        with self._lock:
            old = self._latest.get(key[0])
            if old is None or old[1] != key[1] or old[3] != key[3] or old[2] > key[2]:
                return None
            found = self._items.get(old)
            return None if found is None else (old[2], found)

    def put(self, key: tuple, rows: list[Row]) -> None:
        with self._lock:
            self._items.put(key, rows, cost=_weight(rows))
            self._latest[key[0]] = key
            if len(self._latest) > 4 * len(self._items) + 100:  # forget mailboxes no longer held
                self._latest = {m: k for m, k in self._latest.items() if self._items.get(k) is not None}

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _weight(rows: list[Row]) -> int:
    """About the bytes a mailbox's rows hold: each row and each distinct body's key strings."""
    seen: set[int] = set()
    total = 0
    for r in rows:
        k = r.k
        total += 120
        if id(k) not in seen:
            seen.add(id(k))
            total += 300 + sum(len(k[i]) for i in (0, 3, 4, 5, 6, 7, 8)) + sum(len(p) + 50 for p in k[9])
    return total


ROWS = RowCache()
_COLS = ", ".join(sortkeys.COLUMNS)


def _all_rows(tx: Tx, mailbox_id: int, since: int = 1) -> tuple[list[Row], list[tuple]]:
    """The mailbox's messages from UID `since` on, and the keys computed for bodies stored before
    migration 0012."""
    found = tx.all(
        f"SELECT m.uid, m.size, m.internal_date, b.id, {', '.join('b.' + c for c in sortkeys.COLUMNS)}"
        " FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :mb AND m.uid >= :since"
        " ORDER BY m.uid",
        {"mb": mailbox_id, "since": since},
    )
    old = list({r[3] for r in found if r[4] is None})
    computed: dict[int, tuple] = {}
    for i in range(0, len(old), 500):
        part = {f"b{k}": v for k, v in enumerate(old[i : i + 500])}
        marks = ", ".join(f":{k}" for k in part)
        for bid, parsed in tx.all(f"SELECT id, parsed FROM blobs WHERE id IN ({marks})", part):
            computed[bid] = sortkeys.of(mime.from_json(unpack(parsed))).row()
    shared: dict[int, tuple] = {}  # one keys tuple per body, its parents split once
    out = []
    for uid, size, internal, bid, *cols in found:
        k = shared.get(bid)
        if k is None:
            c = computed.get(bid) or cols
            k = shared[bid] = (*c[:9], c[9].split() if c[9] else [])
        out.append(Row(uid, size, internal, k))
    return out, [(bid, *keys) for bid, keys in computed.items()]


def _in_uids(found: list[Row], key: sk.SearchKey) -> list[Row] | None:
    """The rows a key made of All and at most one UID set selects (sliced by bisection), or None for
    any other key."""
    parts = key.keys if isinstance(key, sk.And) else (key,)
    sets = [k for k in parts if isinstance(k, sk.Uids)]
    if len(sets) > 1 or not all(isinstance(k, sk.All | sk.Uids) for k in parts):
        return None
    if not sets:
        return found
    uids = [r.uid for r in found]
    out: list[Row] = []
    for lo, hi in sorted(sets[0].ranges):
        out += found[
            max(bisect_left(uids, lo), bisect_left(uids, out[-1].uid + 1) if out else 0) : bisect_right(
                uids, hi
            )
        ]
    return out


def _state(tx: Tx, user_id: int, mailbox_id: int) -> tuple:
    """What the mailbox's set of messages is known by (see RowCache); NotFound for another's mailbox."""
    box = folders.by_id(tx, user_id, mailbox_id)
    last_expunge = tx.value("SELECT MAX(modseq) FROM expunged WHERE mailbox_id = :mb", {"mb": mailbox_id})
    count = tx.value("SELECT COUNT(*) FROM messages WHERE mailbox_id = :mb", {"mb": mailbox_id})
    return (mailbox_id, box.uidvalidity, box.uidnext, last_expunge, count)


def rows(
    tx: Tx, user_id: int, mailbox_id: int, key: sk.SearchKey, blobs: BlobStore, state: tuple | None = None
) -> Result:
    """The messages matching `key`, in UID order, with what SORT and THREAD compare."""
    state = state or _state(tx, user_id, mailbox_id)
    found = ROWS.get(state)
    computed: list[tuple] = []
    if found is None:
        earlier = ROWS.earlier(state)
        if earlier is not None:
            newer, computed = _all_rows(tx, mailbox_id, since=earlier[0])
            found = earlier[1] + newer
        if earlier is None or len(found) != state[4]:
            found, computed = _all_rows(tx, mailbox_id)
        if len(found) == state[4]:  # else changed between the two reads (PostgreSQL, read committed)
            ROWS.put(state, found)
    chosen = _in_uids(found, key)
    if chosen is None:  # the criteria are SEARCH's: its one evaluation
        wanted = set(search(tx, user_id, mailbox_id, key, blobs))
        chosen = [r for r in found if r.uid in wanted]
    return Result(chosen, computed)


_FIXED = sk.All | sk.Uids | sk.Header | sk.Address | sk.Text | sk.Size | sk.Date | sk.EmailId


class ResultCache:
    """Answers of SORT and THREAD by (mailbox state as RowCache's, criteria, sort or algorithm), for
    criteria that read only what never changes in a message (no flags, no MODSEQ): the same set of
    messages gives the same answer, so a client that sorts or threads again after marking mail read
    is answered without threading again. Bounded by the numbers held; shared by the store's threads."""

    def __init__(self, max_numbers: int = 500_000):
        self._items: Cache[tuple, list] = Cache(max_numbers)
        self._lock = threading.Lock()

    @staticmethod
    def usable(key: sk.SearchKey) -> bool:
        return all(isinstance(k, _FIXED) for k in sk.leaves(key))

    def get(self, key: tuple) -> list | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple, answer: list) -> None:
        with self._lock:
            self._items.put(key, answer, cost=max(1, len(answer)))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


RESULTS = ResultCache()


def fill(tx: Tx, computed: list[tuple]) -> None:
    """Write keys computed by `rows` (only where still missing: another store may have been first)."""
    sets = ", ".join(f"{c} = :k{i}" for i, c in enumerate(sortkeys.COLUMNS))
    for bid, *keys in computed:
        params = {f"k{i}": v for i, v in enumerate(keys)}
        tx.run(f"UPDATE blobs SET {sets} WHERE id = :id AND sort_subject IS NULL", {"id": bid, **params})


# --- SORT -------------------------------------------------------------------------------------------

_KEYS: dict[str, Callable[[Row], object]] = {
    "arrival": lambda r: r.internal,
    "cc": lambda r: r.k[5],
    "date": lambda r: r.sent,
    "from": lambda r: r.k[3],
    "size": lambda r: r.size,
    "subject": lambda r: r.k[0],
    "to": lambda r: r.k[4],
    "displayfrom": lambda r: r.k[6],
    "displayto": lambda r: r.k[7],
}


def sort(found: list[Row], criteria: list[tuple[str, bool]]) -> list[int]:
    """UIDs in the order of `criteria` ((name, reverse) each, most significant first); `found` is in
    UID order, which breaks every tie (Python's sort is stable, reverse=True included)."""
    order = list(found)
    for name, reverse in reversed(criteria):
        order.sort(key=_KEYS[name], reverse=reverse)
    return [r.uid for r in order]


# --- THREAD -----------------------------------------------------------------------------------------


class _Node:
    __slots__ = ("row", "parent", "children", "when")

    def __init__(self, row: Row | None = None):
        self.row, self.parent = row, None
        self.children: list[_Node] = []
        self.when: tuple[int, int] = (0, 0)


def _date(n: _Node) -> tuple[int, int]:
    return n.when


def _below(roots: list[_Node]) -> list[_Node]:
    """Every node under `roots` (themselves included), each after its parent: walked backwards, each
    node comes after its children."""
    out = list(roots)
    i = 0
    while i < len(out):
        out.extend(out[i].children)
        i += 1
    return out


def _sort_tree(roots: list[_Node]) -> list[_Node]:
    """RFC 5256 §4 REFERENCES step 6 (and ORDEREDSUBJECT's order): siblings by sent date, then by
    mailbox order; a dummy takes the date of its first child. Children first, without recursion."""
    for node in reversed(_below(roots)):
        kids = node.children
        if len(kids) > 1:
            kids.sort(key=_date)
        row = node.row
        if row is not None:
            node.when = (row.sent, row.uid)
        elif kids:
            node.when = kids[0].when
    return sorted(roots, key=_date)


def _preorder(roots: list[_Node]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    append = out.append
    stack = [(r, 0) for r in reversed(roots)]
    push = stack.append
    while stack:
        node, depth = stack.pop()
        while True:  # down the first child at once: a reply chain costs no stack
            append((0 if node.row is None else node.row.uid, depth))
            kids = node.children
            if not kids:
                break
            depth += 1
            for i in range(len(kids) - 1, 0, -1):
                push((kids[i], depth))
            node = kids[0]
    return out


def ordered_subject(found: list[Row]) -> list[tuple[int, int]]:
    """ORDEREDSUBJECT: messages grouped by base subject; in each group the earliest is the root and the
    others its children, by sent date; the groups by their first message's sent date."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(found, key=_sent_order):
        group = groups.get(row.k[0])
        if group is None:
            groups[row.k[0]] = [row]
        else:
            group.append(row)
    out: list[tuple[int, int]] = []
    for group in groups.values():  # first seen = earliest first message: already in thread order
        out.append((group[0].uid, 0))
        out += [(r.uid, 1) for r in group[1:]]
    return out


def _sent_order(r: Row) -> tuple[int, int]:
    return (r.sent, r.uid)


def _is_ancestor(a: _Node, b: _Node) -> bool:
    """Is `a` b itself or one of its ancestors? Past MAX_WALK ancestors: assumed yes (no link made)."""
    if a is b:
        return True
    if not a.children:
        return False
    n = b.parent
    for _ in range(MAX_WALK):
        if n is None:
            return False
        if n is a:
            return True
        n = n.parent
    return True


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _containers(found: list[Row]) -> list[_Node]:
    """Step 1: every message in a container, linked to its parents; the root set (step 2)."""
    per = max(1, min(sortkeys.MAX_REFS, REFS_BUDGET // max(1, len(found))))
    by_id: dict[str, _Node] = {}
    nodes: list[_Node] = []

    for row in found:
        own, parents = row.k[8], row.k[9]
        c = by_id.get(own) if own else None
        if c is None or c.row is not None:  # no id, or a duplicate: a container of its own
            c = _Node()
            nodes.append(c)
            if own and own not in by_id:
                by_id[own] = c
        c.row = row
        prev = None
        for mid in parents[-per:] if len(parents) > per else parents:  # (A) each the parent of the next
            ref = by_id.get(mid)
            if ref is None:
                ref = by_id[mid] = _Node()
                nodes.append(ref)
                if prev is not None:  # a new container: no parent, no children, no loop possible
                    ref.parent = prev
                    prev.children.append(ref)
            elif prev is not None and ref.parent is None and not _is_ancestor(ref, prev):
                _link(prev, ref)
            prev = ref
        if prev is None:  # (B) the last reference is the message's parent, or it has none
            if c.parent is not None:
                c.parent.children.remove(c)
                c.parent = None
        elif c.parent is not prev and not _is_ancestor(c, prev):
            _link(prev, c)
    return [n for n in nodes if n.parent is None]


def _prune(roots: list[_Node]) -> list[_Node]:
    """Step 4: dummies without children go; a dummy's children take its place, except that a dummy
    root with more than one child stays. Bottom up, so promoted children are already pruned."""
    for node in reversed(_below(roots)):
        for c in node.children:
            if c.row is None:
                break
        else:
            continue
        kept: list[_Node] = []
        for c in node.children:
            if c.row is None:
                kept.extend(c.children)
            else:
                kept.append(c)
        node.children = kept
    out: list[_Node] = []
    for r in roots:
        if r.row is not None or len(r.children) > 1:
            out.append(r)
        elif r.children:
            out.append(r.children[0])
    for r in out:
        r.parent = None
    return out


def _first(root: _Node) -> Row:
    """The root's message, or for a dummy its first child's (after pruning children are messages)."""
    if root.row is not None:
        return root.row
    return min((c.row for c in root.children), key=_sent_order)


def _subject_of(root: _Node) -> str:
    return _first(root).k[0]


def _group(roots: list[_Node]) -> list[_Node]:
    """Step 5: roots with the same base subject gathered under one."""
    table: dict[str, _Node] = {}
    for r in roots:
        subject = _subject_of(r)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (r.row is None and old.row is not None)
            or (old.row is not None and r.row is not None and old.row.reply and not r.row.reply)
        ):
            table[subject] = r
    out: list[_Node] = []
    where: dict[int, int] = {}  # id(root) -> its index in `out`
    for r in roots:
        subject = _subject_of(r)
        old = table.get(subject) if subject else None
        if old is None or old is r:
            where[id(r)] = len(out)
            out.append(r)
        elif old.row is None and r.row is None:
            for c in r.children:
                c.parent = old
            old.children.extend(r.children)
        elif old.row is None or (r.row is not None and not old.row.reply and r.row.reply):
            _link(old, r)
        else:  # both messages: a new dummy holds them, in old's place (old came first: it is in `out`)
            dummy = _Node()
            _link(dummy, old)
            _link(dummy, r)
            table[subject] = dummy
            out[where[id(old)]] = dummy
            where[id(dummy)] = where[id(old)]
    return out


def references(found: list[Row]) -> list[tuple[int, int]]:
    """REFERENCES (RFC 5256 §4): threads from Message-ID / References / In-Reply-To, roots of the same
    base subject gathered, everything ordered by sent date."""
    roots = sorted(_prune(_containers(found)), key=lambda r: _sent_order(_first(r)))
    return _preorder(_sort_tree(_group(roots)))


THREADERS = {"orderedsubject": ordered_subject, "references": references}


def _answer(tx: Tx, user_id: int, mailbox_id: int, key: sk.SearchKey, blobs: BlobStore, what: tuple,
            make: Callable[[list[Row]], list]) -> tuple[list, list[tuple]]:  # fmt: skip
    state = _state(tx, user_id, mailbox_id)
    cached = (state, key, what) if RESULTS.usable(key) else None
    if cached is not None and (answer := RESULTS.get(cached)) is not None:
        return answer, []
    res = rows(tx, user_id, mailbox_id, key, blobs, state)
    answer = make(res.rows)
    if cached is not None:
        RESULTS.put(cached, answer)
    return answer, res.fill


def sort_tx(tx: Tx, user_id: int, mailbox_id: int, key: sk.SearchKey, criteria: list[tuple[str, bool]],
            blobs: BlobStore) -> tuple[list[int], list[tuple]]:  # fmt: skip
    """(UIDs in order, keys to `fill`)."""
    what = ("sort", tuple((name, bool(rev)) for name, rev in criteria))
    return _answer(tx, user_id, mailbox_id, key, blobs, what, lambda found: sort(found, criteria))


def thread_tx(tx: Tx, user_id: int, mailbox_id: int, key: sk.SearchKey, algorithm: str,
              blobs: BlobStore) -> tuple[list[tuple[int, int]], list[tuple]]:  # fmt: skip
    """(threads as a preorder of (uid or 0, depth), keys to `fill`)."""
    return _answer(tx, user_id, mailbox_id, key, blobs, ("thread", algorithm), THREADERS[algorithm])
