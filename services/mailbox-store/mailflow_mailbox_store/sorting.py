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
(RowCache; new mail extends them), the answers for criteria that read no flags (ResultCache), and
REFERENCES' step 1 per mailbox (ForestCache; new mail is added to a copy, steps 2-6 run again).
Measured in tests/bench/bench_sort.py (10,000 messages).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter

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


# A row: one message as SORT and THREAD read it, a plain tuple (uid, size, internal date, sent date, keys)
# whose keys are its body's (sortkeys.COLUMNS order, the parents a tuple), shared by every message with
# that body. Nothing in it but numbers, strings and tuples of them: CPython's cyclic GC stops tracking
# such tuples in the collections they survive (one level of nesting per collection), so the cached
# rows of a mailbox are not walked by each full collection, as objects with __slots__ and lists are.
UID, SIZE, INTERNAL, SENT, KEYS = range(5)
Row = tuple


def row_of(uid: int, size: int, internal: int, k: tuple) -> Row:
    """k: the keys, parents as a tuple; RFC 5256 §2.2: no Date:, the internal date is the sent date."""
    return (uid, size, internal, internal if k[2] is None else k[2], k)


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
    (`_weight`, least recently used mailbox out; after new mail the earlier weight plus the new rows',
    not a walk over the mailbox: 20-30 ms for 10,000 rows on this machine); shared by the store's
    threads; per process (each store process checks against the database)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self._items: Cache[tuple, tuple[list[Row], int]] = Cache(max_bytes)  # (rows, their weight)
        self._latest: dict[int, tuple] = {}  # mailbox id -> the state last put for it
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[Row] | None:
        with self._lock:
            found = self._items.get(key)
            return None if found is None else found[0]

    def earlier(self, key: tuple) -> tuple[int, list[Row], int] | None:
        """(UIDNEXT then, rows, their weight) of an earlier state of the mailbox of `key` that `key` only adds
        messages to (same UIDVALIDITY, no expunge since): new mail is read alone, not the mailbox."""
        with self._lock:
            old = self._latest.get(key[0])
            if old is None or old[1] != key[1] or old[3] != key[3] or old[2] > key[2]:
                return None
            found = self._items.get(old)
            return None if found is None else (old[2], *found)

    def put(self, key: tuple, rows: list[Row], weight: int) -> None:
        """`weight`: _weight(rows), or an earlier state's plus the new rows' (a body in both counted twice)."""
        with self._lock:
            self._items.put(key, (rows, weight), cost=weight)
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
        k = r[KEYS]
        total += 120
        if id(k) not in seen:
            seen.add(id(k))
            parents = k[9]
            total += (300 + len(k[0]) + len(k[3]) + len(k[4]) + len(k[5]) + len(k[6]) + len(k[7]) + len(k[8])
                      + sum(map(len, parents)) + 50 * len(parents))  # fmt: skip
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
            k = shared[bid] = (*c[:9], tuple(c[9].split()) if c[9] else ())
        out.append(row_of(uid, size, internal, k))
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
    uids = [r[UID] for r in found]
    out: list[Row] = []
    for lo, hi in sorted(sets[0].ranges):
        out += found[
            max(bisect_left(uids, lo), bisect_left(uids, out[-1][UID] + 1) if out else 0) : bisect_right(
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
            found, weight = earlier[1] + newer, earlier[2] + _weight(newer)
        if earlier is None or len(found) != state[4]:
            found, computed = _all_rows(tx, mailbox_id)
            weight = _weight(found)
        if len(found) == state[4]:  # else changed between the two reads (PostgreSQL, read committed)
            ROWS.put(state, found, weight)
    chosen = _in_uids(found, key)
    if chosen is None:  # the criteria are SEARCH's: its one evaluation
        wanted = set(search(tx, user_id, mailbox_id, key, blobs))
        chosen = [r for r in found if r[UID] in wanted]
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
    "arrival": itemgetter(INTERNAL),
    "cc": lambda r: r[KEYS][5],
    "date": itemgetter(SENT),
    "from": lambda r: r[KEYS][3],
    "size": itemgetter(SIZE),
    "subject": lambda r: r[KEYS][0],
    "to": lambda r: r[KEYS][4],
    "displayfrom": lambda r: r[KEYS][6],
    "displayto": lambda r: r[KEYS][7],
}


def sort(found: list[Row], criteria: list[tuple[str, bool]]) -> list[int]:
    """UIDs in the order of `criteria` ((name, reverse) each, most significant first); `found` is in
    UID order, which breaks every tie (Python's sort is stable, reverse=True included)."""
    order = list(found)
    for name, reverse in reversed(criteria):
        order.sort(key=_KEYS[name], reverse=reverse)
    return [r[UID] for r in order]


# --- THREAD -----------------------------------------------------------------------------------------


def _sent_order(r: Row) -> tuple[int, int]:
    return (r[SENT], r[UID])


def ordered_subject(found: list[Row]) -> list[tuple[int, int]]:
    """ORDEREDSUBJECT: messages grouped by base subject; in each group the earliest is the root and the
    others its children, by sent date; the groups by their first message's sent date."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(found, key=_sent_order):
        group = groups.get(row[KEYS][0])
        if group is None:
            groups[row[KEYS][0]] = [row]
        else:
            group.append(row)
    out: list[tuple[int, int]] = []
    for group in groups.values():  # first seen = earliest first message: already in thread order
        out.append((group[0][UID], 0))
        out += [(r[UID], 1) for r in group[1:]]
    return out


class _Forest:
    """REFERENCES step 1 (RFC 5256 §4) over the messages `added` so far, as arrays indexed by container
    (no object per container: nothing for the cyclic GC to walk): each container's parent (-1: none),
    its message (None: a dummy), its number of children; the id table (Message-ID -> container).
    `per`: the parents followed per message. Step 1 takes the messages one at a time in UID order and
    what it has made after n of them depends on those n alone, so `extend` with more messages gives
    what a run over all of them gives (the tests compare the two on random reference graphs)."""

    __slots__ = ("per", "added", "parent", "row", "kids", "by_id")

    def __init__(self, per: int):
        self.per = per
        self.added: list[Row] = []
        self.parent: list[int] = []
        self.row: list[Row | None] = []
        self.kids: list[int] = []
        self.by_id: dict[str, int] = {}

    def copy(self) -> _Forest:
        f = _Forest(self.per)
        f.added, f.parent, f.row, f.kids = self.added[:], self.parent[:], self.row[:], self.kids[:]
        f.by_id = dict(self.by_id)
        return f

    def _is_ancestor(self, a: int, b: int) -> bool:
        """Is `a` b itself or one of its ancestors? Past MAX_WALK ancestors: assumed yes (no link made)."""
        if a == b:
            return True
        if not self.kids[a]:
            return False
        parent = self.parent
        n = parent[b]
        for _ in range(MAX_WALK):
            if n < 0:
                return False
            if n == a:
                return True
            n = parent[n]
        return True

    def _new(self, parent: int) -> int:
        c = len(self.parent)
        self.parent.append(parent)
        self.row.append(None)
        self.kids.append(0)
        if parent >= 0:
            self.kids[parent] += 1
        return c

    def _link(self, parent: int, child: int) -> None:
        old = self.parent[child]
        if old >= 0:
            self.kids[old] -= 1
        self.parent[child] = parent
        if parent >= 0:
            self.kids[parent] += 1

    def extend(self, rows: list[Row]) -> None:
        """Step 1 for each of `rows`: the message in a container, linked to its parents."""
        per, by_id, parent, rowof = self.per, self.by_id, self.parent, self.row
        for row in rows:
            k = row[KEYS]
            own, parents = k[8], k[9]
            c = by_id.get(own) if own else None
            if c is None or rowof[c] is not None:  # no id, or a duplicate: a container of its own
                c = self._new(-1)
                if own and own not in by_id:
                    by_id[own] = c
            rowof[c] = row
            prev = -1
            for mid in parents[-per:]:  # (A) each the parent of the next
                ref = by_id.get(mid)
                if ref is None:  # a new container: no parent, no children, no loop possible
                    ref = by_id[mid] = self._new(prev)
                elif prev >= 0 and parent[ref] < 0 and not self._is_ancestor(ref, prev):
                    self._link(prev, ref)
                prev = ref
            # (B) the last reference is the message's parent, or it has none
            if prev < 0 or (parent[c] != prev and not self._is_ancestor(c, prev)):
                self._link(prev, c)
        self.added += rows

    def cost(self) -> int:
        """About the bytes held beyond the rows: four list slots and a table entry per container."""
        return 40 * len(self.parent) + 8 * len(self.added) + 100 * len(self.by_id)


class ForestCache:
    """Step 1 of REFERENCES per mailbox, kept so that a THREAD after new mail adds the new messages to
    a copy of it instead of taking all of them again. Used when the messages threaded now start with
    the ones it was made of (compared by value) and the parents per message are as many; otherwise
    step 1 runs over all of them and its result replaces the mailbox's. Bounded by the bytes held
    (`_Forest.cost`, least recently used mailbox out); shared by the store's threads."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self._items: Cache[int, _Forest] = Cache(max_bytes)
        self._lock = threading.Lock()

    def extended(self, mailbox_id: int, found: list[Row], per: int) -> _Forest:
        with self._lock:
            f = self._items.get(mailbox_id)
        n = 0 if f is None else len(f.added)
        if f is not None and f.per == per and n <= len(found) and f.added == found[:n]:
            f = f.copy()
        else:
            f, n = _Forest(per), 0
        f.extend(found[n:] if n else found)
        with self._lock:
            self._items.put(mailbox_id, f, cost=f.cost())
        return f

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


FORESTS = ForestCache()
_UIDS = 1 << 32  # UIDs are 32-bit (RFC 3501 nz-number): sent * _UIDS + uid orders by (sent, uid)


def _threads(f: _Forest) -> list[tuple[int, int]]:
    """Steps 2-6 of REFERENCES over step 1's forest (not changed): dummies pruned (4), roots of the same
    base subject gathered (5), siblings and threads by sent date then UID (6), as a preorder of (uid or
    0, depth). Arrays and loops, no recursion; children are kept as one array (CSR), not a list each."""
    parent = f.parent
    rowof = f.row[:]  # here new dummies of step 5 are added
    n = len(parent)
    # Step 4: a dummy that is not a root gives its children to its parent, or to where that gives them.
    attach = [-1 if r is None and p >= 0 else i for i, (r, p) in enumerate(zip(rowof, parent, strict=True))]
    path: list[int] = []
    for i in [i for i, a in enumerate(attach) if a == -1]:
        x = i
        while attach[x] == -1:
            path.append(x)
            x = parent[x]
        for y in path:
            attach[y] = attach[x]
        path.clear()
    # a message's parent after step 4 (a message or a dummy root), -1 for a root; dummies: -1
    up = [-1 if r is None or p < 0 else attach[p] for r, p in zip(rowof, parent, strict=True)]
    when = [0 if r is None else r[SENT] * _UIDS + r[UID] for r in rowof]  # step 6's order: date, UID
    under = [0] * n  # messages whose parent is this dummy root
    first = list(range(n))  # a dummy root's earliest such message; a message: itself
    for i in [i for i, a in enumerate(up) if a >= 0 and rowof[a] is None]:
        a = up[i]
        under[a] += 1
        if under[a] == 1 or when[i] < when[first[a]]:
            first[a] = i
    roots = [i for i, p in enumerate(parent) if p < 0 and (rowof[i] is not None or under[i] > 1)]
    for i in [i for i, p in enumerate(parent) if p < 0 and under[i] == 1]:  # a dummy root with one child
        up[first[i]] = -1  # gives way to it
        roots.append(first[i])
    roots.sort(key=lambda r: when[first[r]])
    top = _gather(roots, [rowof[first[r]][KEYS][0] for r in roots], rowof, up)  # type: ignore[index]
    # Step 6: every message in (sent, UID) order appended to its parent's children: siblings sorted.
    order = sorted([i for i, r in enumerate(rowof[:n]) if r is not None], key=when.__getitem__)
    t = len(rowof)
    start = [0] * (t + 1)
    for i in order:
        start[up[i] + 1] += 1  # a root counts under start[0], which no node reads
    start[0] = 0
    for j in range(t):
        start[j + 1] += start[j]
    free = start[:]
    kids = [0] * start[t]
    for i in order:
        p = up[i]
        if p >= 0:
            kids[free[p]] = i
            free[p] += 1
    top.sort(key=lambda r: when[r] if rowof[r] is not None else when[kids[start[r]]])
    uids = [0 if r is None else r[UID] for r in rowof]
    out: list[tuple[int, int]] = []
    append = out.append
    stack = top[::-1]  # node + depth * t: one int per entry
    pop = stack.pop
    while stack:
        depth, x = divmod(pop(), t)
        while True:  # down the first child at once: a reply chain costs no stack
            append((uids[x], depth))
            a, b = start[x], start[x + 1]
            if a == b:
                break
            depth += 1
            if b - a > 1:  # the others wait on the stack, the second on top
                base = depth * t
                stack += [k + base for k in kids[b - 1 : a : -1]]
            x = kids[a]
    return out


def _gather(roots: list[int], subjects: list[str], rowof: list[Row | None], up: list[int]) -> list[int]:
    """Step 5 over `roots` (in step 3's order, each with its first message's base subject): roots of one
    subject under one (a dummy, else the first non-reply, else the first), two messages under a new
    dummy (appended to `rowof` and `up`). Sets `up` of what moves; returns the roots left, in order."""
    table: dict[str, int] = {}
    for r, subject in zip(roots, subjects, strict=True):
        if not subject:
            continue
        old = table.get(subject)
        if old is None:
            table[subject] = r
            continue
        o, m = rowof[old], rowof[r]
        if (m is None and o is not None) or (o is not None and m is not None and o[KEYS][1] and not m[KEYS][1]):
            table[subject] = r
    top: list[int] = []
    where: dict[int, int] = {}  # root -> its index in `top`
    into: dict[int, int] = {}  # a dummy root -> the dummy root its children go to
    for r, subject in zip(roots, subjects, strict=True):
        old = table.get(subject) if subject else None
        if old is None or old == r:
            where[r] = len(top)
            top.append(r)
            continue
        o, m = rowof[old], rowof[r]
        if o is None and m is None:
            into[r] = old
        elif o is None or (m is not None and not o[KEYS][1] and m[KEYS][1]):
            up[r] = old
        else:  # both messages: a new dummy holds them, in old's place (old came first: it is in `top`)
            dummy = len(rowof)
            rowof.append(None)
            up.append(-1)
            up[old] = up[r] = dummy
            table[subject] = dummy
            top[where[old]] = dummy
            where[dummy] = where[old]
    if into:
        for i, p in enumerate(up):
            if p in into:
                up[i] = into[p]
    return top


def references(found: list[Row], mailbox_id: int | None = None) -> list[tuple[int, int]]:
    """REFERENCES (RFC 5256 §4): threads from Message-ID / References / In-Reply-To, roots of the same
    base subject gathered, everything ordered by sent date. With `mailbox_id`, step 1 extends what
    FORESTS keeps of the mailbox when it can."""
    per = max(1, min(sortkeys.MAX_REFS, REFS_BUDGET // max(1, len(found))))
    if mailbox_id is None:
        forest = _Forest(per)
        forest.extend(found)
    else:
        forest = FORESTS.extended(mailbox_id, found, per)
    return _threads(forest)


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
    make = partial(references, mailbox_id=mailbox_id) if algorithm == "references" else THREADERS[algorithm]
    return _answer(tx, user_id, mailbox_id, key, blobs, ("thread", algorithm), make)
