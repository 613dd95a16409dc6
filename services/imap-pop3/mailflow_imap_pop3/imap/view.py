"""The selected mailbox as this session's client sees it: sequence numbers, UIDs, flags, MODSEQs.

RFC 3501 numbers messages 1..n per session, and only the server's untagged responses may change that
numbering. The view is that numbering. `apply(changes)` merges what the store reports since the last
look and returns the untagged responses that tell the client: EXPUNGE, or VANISHED once the session
enabled QRESYNC (only when the command in progress allows it, RFC 3501 §7.4.1; otherwise the removal
waits and the message keeps its number),
EXISTS and RECENT for new mail, FETCH for flags that others changed, FLAGS when new keywords appear.
No I/O here; a view with a bug in the store's data (an unknown UID) ignores the odd entry.
"""

from __future__ import annotations

from bisect import bisect_left

from mailflow.contracts.messages import MailboxEvent
from mailflow.store.api import SEEN, SYSTEM_FLAGS, Changes, MailboxStatus, MessageMeta, Selected
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.qresync import as_ranges
from mailflow_imap_pop3.imap.syntax import SeqSet

# "appended" events kept while the view waits for its next look; beyond, that look asks the store (a
# session that sits between commands for long, with mail pouring in, holds no more than this)
MAX_ANNOUNCED = 256

RECENT = "\\Recent"


class MailboxView:
    def __init__(self, name: str, sel: Selected, readonly: bool, qresync: bool = False):
        st = sel.status
        self.name = name
        self.qresync = qresync  # ENABLE QRESYNC: expunges are told as VANISHED (RFC 7162 §3.2.10)
        self.mailbox_id = st.id
        self.readonly = readonly
        self.uidvalidity = st.uidvalidity
        self.uidnext = st.uidnext
        self.highestmodseq = st.highestmodseq
        # The Selected's lists become the view's, not copied (100,000 messages: ~3 ms): it is made for one view
        self.uids: list[int] = sel.uids
        self.flags: list[frozenset[str]] = sel.flags
        self.modseqs: list[int] = sel.modseqs
        self.recent: set[int] = set(sel.recent)
        self.rev2 = False  # the session enabled IMAP4rev2: no \Recent, no RECENT response (RFC 9051)
        self.pending_expunge: set[int] = set()  # gone in the store, still numbered for the client
        # While expunges are held back: a HIGHESTMODSEQ below all of them (RFC 7162 §3.2: MODSEQs sent
        # meanwhile may be higher, and a client resyncing from those would never hear of the expunges)
        self.held_below: int | None = None
        self.keywords: set[str] = set().union(*self.flags) - set(SYSTEM_FLAGS) if self.flags else set()
        self.dirty = False  # the store said something changed; look at the next allowed moment
        # While dirty: the "appended" events that announced it, if nothing else did (None: ask the store)
        self.announced: list[MailboxEvent] | None = []
        self.event_at: float | None = None  # when the first unseen change was announced (push latency)
        self.asked_at = float("-inf")  # when the store last told us the changes (monotonic), and the
        self.asked_epoch = -1  # hub's epoch then: see Session.sync
        # SEARCH criteria about content only -> (highest UID searched, UIDs that matched): see search.py
        self.searched: dict[object, tuple[int, frozenset[int]]] = {}
        self.saved: list[int] = []  # "$", RFC 5182: UIDs of the last SEARCH/SORT RETURN (SAVE), ascending
        # RFC 5267 §4 searches kept up to date (tag -> commands/context.Updating), and while there are
        # any, the UIDs that arrived, changed flags or left since they were last brought up to date
        self.contexts: dict[str, object] = {}
        self.touched: set[int] = set()

    # --- numbering ------------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def by_seq(self, seqset: SeqSet) -> list[int]:
        """Indexes (0-based) of the messages a sequence-number set names, ascending, no repeats.
        ValueError for a number past the last message (RFC 3501 §9: that is an error, BAD)."""
        n = len(self.uids)
        if n == 0:
            raise ValueError("No messages in the mailbox")
        ranges = seqset.resolve(n)  # ascending and disjoint: the indexes come out sorted, each once
        if ranges[-1][1] > n:
            raise ValueError("Sequence number out of range")
        if len(ranges) == 1:
            return list(range(ranges[0][0] - 1, ranges[0][1]))
        out: list[int] = []
        for lo, hi in ranges:
            out.extend(range(lo - 1, hi))
        return out

    def by_saved(self) -> list[int]:
        """Indexes of the messages of "$" still in the view, ascending."""
        return sorted(i for u in self.saved if (i := self.index_of(u)) is not None)

    def by_uid(self, seqset: SeqSet) -> list[int]:
        """Indexes of the messages whose UIDs are in the set; UIDs with no message are skipped silently,
        and `*` is the largest UID in the mailbox (RFC 3501 §6.4.8, so "N:*" always has a message)."""
        uids = self.uids
        if not uids:
            return []
        out: list[int] = []
        for lo, hi in seqset.resolve(uids[-1]):  # ascending and disjoint: sorted, each index once
            out.extend(range(bisect_left(uids, lo), bisect_left(uids, hi + 1)))
        return out

    def first_unseen(self) -> int | None:
        for i, f in enumerate(self.flags):
            if SEEN not in f:
                return i + 1
        return None

    def flags_of(self, i: int) -> frozenset[str]:
        f = self.flags[i]
        return f | {RECENT} if self.uids[i] in self.recent else f

    def flag_names(self) -> list[str]:
        return [*SYSTEM_FLAGS, *sorted(self.keywords)]

    # --- changes ----------------------------------------------------------------------------------------

    def announce(self, event: MailboxEvent) -> None:
        """A mailbox event for this mailbox: look again at the next allowed moment. An "appended" event
        that carries the new messages' flags is kept, so that moment may need no store call."""
        if not self.dirty:
            self.announced = []
        self.dirty = True
        if self.announced is not None:
            usable = event.kind == "appended" and event.flags is not None and len(event.flags) == len(event.uids)
            if usable and event.since > 0 and len(self.announced) < MAX_ANNOUNCED:
                self.announced.append(event)  # past MAX_ANNOUNCED: None, the store tells it all
            else:
                self.announced = None

    def look_again(self) -> None:
        """Something changed that only the store can tell: ask it at the next allowed moment."""
        self.dirty = True
        self.announced = None

    def announced_changes(self) -> Changes | None:
        """What the kept "appended" events add, if they continue this view's HIGHESTMODSEQ exactly (each
        starts where the one before ended, the first where the view stands): then nothing else can have
        changed in between, and they are all there is to tell. Otherwise None: ask the store."""
        events = self.announced
        if not events:
            return None
        modseq = self.highestmodseq
        added: list[MessageMeta] = []
        for ev in sorted(events, key=lambda e: e.since):
            if ev.since != modseq:
                return None
            added += (MessageMeta(u, frozenset(f), ev.modseq) for u, f in zip(ev.uids, ev.flags, strict=True))
            modseq = ev.modseq
        if not added:
            return None
        uidnext = max(self.uidnext, max(m.uid for m in added) + 1)
        status = MailboxStatus(self.mailbox_id, self.name, self.uidvalidity, uidnext, 0, 0, 0, modseq)
        return Changes(status=status, updated=sorted(added, key=lambda m: m.uid), expunged=[])

    def update_flags(self, metas: list[MessageMeta]) -> list[str]:
        """Our own STORE's result; returns keywords that are new to the mailbox."""
        new_keywords = []
        for meta in metas:
            i = self.index_of(meta.uid)
            if i is None:
                continue
            self.flags[i] = meta.flags
            self.modseqs[i] = meta.modseq
            if self.contexts:
                self.touched.add(meta.uid)
            for f in meta.flags:
                if f not in self.keywords and f not in SYSTEM_FLAGS:
                    self.keywords.add(f)
                    new_keywords.append(f)
        return new_keywords

    def remove(self, uids) -> list[bytes]:
        """Drop messages now and return their EXPUNGE responses (numbers as the client counts them), or
        with QRESYNC one VANISHED of their UIDs."""
        gone = {u for u in uids if self.index_of(u) is not None}
        self.pending_expunge -= gone
        if not self.pending_expunge:
            self.held_below = None
        if not gone:
            return []
        if self.contexts:
            self.touched |= gone
        out = []
        if self.qresync:
            out = rsp.vanished(as_ranges(sorted(gone)), earlier=False)
        removed = 0
        keep_u, keep_f, keep_m = [], [], []
        for i, u in enumerate(self.uids):
            if u in gone:
                if not self.qresync:
                    out.append(b"* %d EXPUNGE\r\n" % (i + 1 - removed))
                removed += 1
            else:
                keep_u.append(u)
                keep_f.append(self.flags[i])
                keep_m.append(self.modseqs[i])
        self.uids, self.flags, self.modseqs = keep_u, keep_f, keep_m
        self.recent -= gone
        return out

    def new_top(self, ch: Changes) -> int:
        """The highest UID `ch` adds to the view (0: it adds none)."""
        last = self.uids[-1] if self.uids else 0
        return max((m.uid for m in ch.updated if m.uid > last), default=0)

    def apply(self, ch: Changes, allow_expunge: bool, condstore: bool, recent_from: int | None = None) -> list[bytes]:
        """`recent_from`: the new messages from this UID on are \\Recent in this session (the store said so:
        Mailboxes.claim_recent); None: none of them."""
        out: list[bytes] = []
        if not self.pending_expunge:
            self.held_below = self.highestmodseq  # every change in `ch` has a higher MODSEQ
        self.pending_expunge.update(u for u in ch.expunged if self.index_of(u) is not None)
        if allow_expunge and self.pending_expunge:
            out += self.remove(list(self.pending_expunge))
        last = self.uids[-1] if self.uids else 0
        new: list[MessageMeta] = []
        changed: list[int] = []
        new_keywords = False
        for meta in ch.updated:
            if meta.uid > last:
                new.append(meta)
                continue
            i = self.index_of(meta.uid)
            if i is None or meta.uid in self.pending_expunge:
                continue
            if meta.flags != self.flags[i] or (condstore and meta.modseq != self.modseqs[i]):
                changed.append(i)
            self.flags[i] = meta.flags
            self.modseqs[i] = meta.modseq
        for meta in (*new, *(MessageMeta(self.uids[i], self.flags[i], 0) for i in changed)):
            for f in meta.flags:
                if f not in self.keywords and f not in SYSTEM_FLAGS:
                    self.keywords.add(f)
                    new_keywords = True
        if self.contexts:
            self.touched.update(self.uids[i] for i in changed)
            self.touched.update(m.uid for m in new)
        if new_keywords:
            out.append(b"* FLAGS " + rsp.flags(self.flag_names()) + rsp.CRLF)
        for i in changed:
            out.append(self.fetch_flags_line(i, uid=True, modseq=condstore))
        if new:
            new.sort(key=lambda m: m.uid)
            for meta in new:
                self.uids.append(meta.uid)
                self.flags.append(meta.flags)
                self.modseqs.append(meta.modseq)
                if recent_from is not None and meta.uid >= recent_from:
                    self.recent.add(meta.uid)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            if not self.rev2:
                out.append(b"* %d RECENT\r\n" % len(self.recent))
        self.uidnext = max(self.uidnext, ch.status.uidnext)
        self.highestmodseq = max(self.highestmodseq, ch.status.highestmodseq)
        if not self.pending_expunge:
            self.held_below = None
        return out

    def held_note(self) -> bytes:
        """While expunges wait: `* OK [HIGHESTMODSEQ n]` with n below them, for a CONDSTORE client to
        keep instead of the MODSEQs it saw (RFC 7162 §3.2, the example of its §6); else nothing."""
        if not self.pending_expunge or self.held_below is None:
            return b""
        return b"* OK [HIGHESTMODSEQ %d] Expunges held back\r\n" % self.held_below

    def fetch_flags_line(self, i: int, uid: bool = False, modseq: bool = False) -> bytes:
        parts = [b"FLAGS " + rsp.flags(self.flags_of(i))]
        if uid:
            parts.insert(0, b"UID %d" % self.uids[i])
        if modseq:
            parts.append(b"MODSEQ (%d)" % self.modseqs[i])
        return b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(parts))
