"""What SELECT needs of a mailbox, built in one range scan and kept in memory while it stays true.

A Listing holds every message's UID, flag set (as an index into a small table of distinct sets) and
MODSEQ as packed arrays, ready for the wire, plus the counts STATUS needs. It is valid for exactly one
state of the mailbox: (owner, mailbox id, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ). Every change of a
mailbox moves HIGHESTMODSEQ or UIDNEXT, and a re-created mailbox has a new UIDVALIDITY, so a cached
listing whose key matches the mailbox row read now is exactly what a fresh scan would give. The cache
is per process (each store process checks against the database), an LRU bounded in bytes; only
large mailboxes are kept (small ones are cheaper to scan than to remember).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass

from mailflow.cache import Cache
from mailflow.store.api import MailboxStatus
from mailflow_mailbox_store.keywords import Keywords
from mailflow_mailbox_store.names import SEEN_BIT

KEYWORD_SHIFT = 5  # column value flags + keywords * 32: system flags in bits 0..4, keywords above


@dataclass
class Listing:
    key: tuple
    mailbox_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    uids: array  # 'I'
    index: array  # 'H' or 'I': position in flagsets
    flagsets: list[list[str]]
    modseqs: array  # 'q'
    unseen: int
    size: int
    combos: list[int]  # the column value (flags + keywords * 32) of each flag set

    @property
    def nbytes(self) -> int:
        return len(self.uids) * (self.uids.itemsize + self.index.itemsize + self.modseqs.itemsize) + 200

    def recent(self, first_recent_uid: int) -> int:
        return len(self.uids) - bisect_left(self.uids, first_recent_uid)

    def status(self, first_recent_uid: int, name: str) -> MailboxStatus:
        """The status; `name` from the mailbox row (a rename changes nothing else)."""
        return MailboxStatus(
            id=self.mailbox_id, name=name, uidvalidity=self.uidvalidity, uidnext=self.uidnext,
            messages=len(self.uids), unseen=self.unseen, recent=self.recent(first_recent_uid),
            highestmodseq=self.highestmodseq, size=self.size,
        )  # fmt: skip


def key_of(user_id: int, mailbox_id: int, uidvalidity: int, uidnext: int, highestmodseq: int) -> tuple:
    return (user_id, mailbox_id, uidvalidity, uidnext, highestmodseq)


def build(key: tuple, rows: list[tuple], size: int, kws: Keywords) -> Listing:
    """rows: (uid, flags + keywords*32, modseq) in UID order."""
    _, mailbox_id, uidvalidity, uidnext, highestmodseq = key
    if rows:
        uids, combined, modseqs = zip(*rows, strict=True)
    else:
        uids, combined, modseqs = (), (), ()
    counts = Counter(combined)
    position = {c: i for i, c in enumerate(counts)}
    flagsets = [sorted(kws.flags(c & ((1 << KEYWORD_SHIFT) - 1), c >> KEYWORD_SHIFT)) for c in position]
    unseen = sum(n for c, n in counts.items() if not c & SEEN_BIT)
    index = array("H" if len(position) < 65_536 else "I", map(position.__getitem__, combined))
    return Listing(
        key, mailbox_id, uidvalidity, uidnext, highestmodseq,
        array("I", uids), index, flagsets, array("q", modseqs), unseen, size, list(position),
    )  # fmt: skip


def refresh(
    old: Listing, key: tuple, changed: list[tuple], gone: list[int], size: int | None, kws: Keywords
) -> Listing | None:
    """The listing of a later state of the same mailbox, from the old one and what changed since its
    HIGHESTMODSEQ: changed = (uid, flags + keywords*32, modseq, size) of new or re-flagged messages,
    gone = UIDs expunged since, size = the new total when messages went (else computed here).
    None when a rebuild is the better (or the only) way."""
    if key[:3] != old.key[:3] or len(changed) + len(gone) > max(256, len(old.uids) // 4):
        return None
    uids, modseqs = array("I", old.uids), array("q", old.modseqs)
    index = array(old.index.typecode, old.index)
    combos, flagsets = list(old.combos), list(old.flagsets)
    position = {c: i for i, c in enumerate(combos)}
    if gone:
        dead = set(gone)
        keep = [i for i, u in enumerate(uids) if u not in dead]
        uids = array("I", (uids[i] for i in keep))
        modseqs = array("q", (modseqs[i] for i in keep))
        index = array(index.typecode, (index[i] for i in keep))
    added = 0
    for uid, combined, modseq, msize in changed:
        at = position.get(combined)
        if at is None:
            at = position[combined] = len(combos)
            combos.append(combined)
            flagsets.append(
                sorted(kws.flags(combined & ((1 << KEYWORD_SHIFT) - 1), combined >> KEYWORD_SHIFT))
            )
            if index.typecode == "H" and at >= 65_536:
                return None
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            index[i], modseqs[i] = at, modseq
        elif i == len(uids):  # a new message: UIDs only grow, so it goes at the end
            uids.append(uid)
            index.append(at)
            modseqs.append(modseq)
            added += msize
        else:
            return None
    if size is None:
        size = old.size + added
    unseen = sum(n for at, n in Counter(index).items() if not combos[at] & SEEN_BIT)
    _, mailbox_id, uidvalidity, uidnext, highestmodseq = key
    return Listing(
        key,
        mailbox_id,
        uidvalidity,
        uidnext,
        highestmodseq,
        uids,
        index,
        flagsets,
        modseqs,
        unseen,
        size,
        combos,
    )


class ListingCache:
    """Each mailbox's latest listing, bounded in bytes (the least recently used go first), for mailboxes
    of at least `min_messages` messages. Shared by the store's threads."""

    def __init__(self, max_bytes: int = 128 * 1024 * 1024, min_messages: int = 2_000):
        self.min_messages = min_messages
        self._items: Cache[int, Listing] = Cache(max_bytes)  # mailbox id -> its latest listing; cost: bytes
        self._lock = threading.Lock()

    def latest(self, mailbox_id: int) -> Listing | None:
        """Whatever listing is kept for this mailbox, current or not (for refresh)."""
        with self._lock:
            return self._items.get(mailbox_id)

    def get(self, key: tuple) -> Listing | None:
        hit = self.latest(key[1])
        return hit if hit is not None and hit.key == key else None

    def put(self, listing: Listing) -> None:
        if len(listing.uids) >= self.min_messages:
            with self._lock:
                self._items.put(listing.mailbox_id, listing, cost=listing.nbytes)
