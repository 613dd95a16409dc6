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
from collections import Counter, OrderedDict
from dataclasses import dataclass

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
        array("I", uids), index, flagsets, array("q", modseqs), unseen, size,
    )  # fmt: skip


class ListingCache:
    def __init__(self, max_bytes: int = 128 * 1024 * 1024, min_messages: int = 2_000):
        self.max_bytes = max_bytes
        self.min_messages = min_messages
        self._items: OrderedDict[int, Listing] = OrderedDict()  # mailbox id -> its latest listing
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Listing | None:
        with self._lock:
            hit = self._items.get(key[1])
            if hit is None or hit.key != key:
                return None
            self._items.move_to_end(key[1])
            return hit

    def put(self, listing: Listing) -> None:
        if len(listing.uids) < self.min_messages or listing.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(listing.mailbox_id, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[listing.mailbox_id] = listing
            self._bytes += listing.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, gone = self._items.popitem(last=False)
                self._bytes -= gone.nbytes
