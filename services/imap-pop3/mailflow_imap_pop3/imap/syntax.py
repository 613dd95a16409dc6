"""What an IMAP command means once parsed: one frozen dataclass per argument shape.

`parser.py` builds these from bytes; the handlers in `commands/` read them. Nothing here does I/O or
knows about the session. Sequence sets keep `*` as 0 (valid numbers start at 1), are normalised when
parsed (`SeqSet.of`), and the session resolves them against the selected mailbox. SEARCH criteria
reuse `mailflow.store.search` for what the store evaluates, plus three keys only the session can resolve (sequence numbers, UID sets with `*`, \\Recent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

STAR = 0  # "*" in a sequence set


def _merged(ranges) -> list[tuple[int, int]]:
    """Ascending (lo, hi) ranges with overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((a, b) if a <= b else (b, a) for a, b in ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


@dataclass(frozen=True, slots=True)
class SeqSet:
    ranges: tuple[tuple[int, int], ...]  # (a, b); 0 is "*"; a range may run backwards
    saved: bool = False  # "$": the last SEARCH RETURN (SAVE) result (RFC 5182); `ranges` is empty

    @classmethod
    def of(cls, written: list[tuple[int, int]]) -> SeqSet:
        """The set as few ranges (issue 12.5: 16,000 copies of `1:*` are one): explicit ranges merged,
        and the ranges with `*` reduced to `lo:*` and `hi:*` for the smallest and largest number written
        with one. Whatever `*` turns out to be, every `n:*` contains it, so their union is what those
        two name together; a lone `*` stays only if no `n:*` does."""
        explicit = _merged((a, b) for a, b in written if a != STAR and b != STAR)
        ends = [b if a == STAR else a for a, b in written if (a == STAR) != (b == STAR)]
        if ends:
            lo, hi = min(ends), max(ends)
            starred = [(lo, STAR)] if lo == hi else [(lo, STAR), (hi, STAR)]
        else:
            starred = [(STAR, STAR)] if any(a == STAR for a, _ in written) else []
        return cls(tuple(explicit + starred))

    def count(self) -> int:
        """How many numbers the set names (for a set without `*`), without listing them."""
        return sum(hi - lo + 1 for lo, hi in _merged(self.ranges))

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with `*` replaced by `largest` (RFC 3501 §9 seq-range), ascending, none overlapping
        or adjacent: the numbers they name, each once."""
        return _merged((largest if a == STAR else a, largest if b == STAR else b) for a, b in self.ranges)


SAVED = SeqSet((), saved=True)


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" for the UID forms
    args: object = None
    # (text, code) when a mailbox name in it is not modified UTF-7: the session answers NO with them
    invalid_name: tuple[str, str] | None = None


# --- arguments ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str  # upper case
    initial: bytes | None = None  # SASL-IR (RFC 4959), still base64; b"=" is an empty response


@dataclass(frozen=True, slots=True)
class Qresync:
    """SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids] [(known-seqs known-uids)])), RFC 7162 §3.2.5.
    The sets never hold `*` (the grammar forbids it); `match` pairs sequence numbers with UIDs by position,
    both sets naming as many numbers (checked when parsed)."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None
    match: tuple[SeqSet, SeqSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class QuotaRootArg:  # GETQUOTA (RFC 9208 §4.2)
    root: str


@dataclass(frozen=True, slots=True)
class MailboxArg:  # CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT
    mailbox: str
    special_use: str | None = None  # CREATE ... (USE (\Drafts)), RFC 6154 §3


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ListCmd:
    reference: str
    patterns: tuple[str, ...]
    select_opts: frozenset[str] = frozenset()  # SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE
    return_opts: frozenset[str] = frozenset()  # SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS
    status_items: tuple[str, ...] = ()  # RETURN (STATUS (...)), RFC 5819
    lsub: bool = False
    extended: bool = False  # any RFC 5258 syntax was used


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CatUrl:
    """A CATENATE URL part (RFC 4469): an IMAP URL (RFC 5092) as the client wrote it; the session
    resolves it (imap/urls.py), so a bad one is NO [BADURL], not a syntax error."""

    url: str


@dataclass(frozen=True, slots=True)
class AppendItem:
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes  # b"" for a CATENATE item
    parts: tuple[bytes | CatUrl, ...] | None = None  # CATENATE (RFC 4469): TEXT literals and URLs, in order


@dataclass(frozen=True, slots=True)
class Append:  # one message, or several: MULTIAPPEND (RFC 3502)
    mailbox: str
    items: tuple[AppendItem, ...]


@dataclass(frozen=True, slots=True)
class CopyMove:
    seqset: SeqSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class SeqArg:  # UID EXPUNGE
    seqset: SeqSet


@dataclass(frozen=True, slots=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section-spec as the store's fetch_sections takes it and as the response echoes it."""
        part = ".".join(str(n) for n in self.part)
        text = self.text
        if self.fields:
            text += " (" + " ".join(self.fields) + ")"
        return part + "." + text if part and text else part or text


@dataclass(frozen=True, slots=True)
class FetchAtt:
    name: str  # FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ RFC822
    # RFC822.HEADER RFC822.TEXT, BODY[] for every BODY[section] / BODY.PEEK[section], BINARY[] for every
    # BINARY[part] / BINARY.PEEK[part] and BINARY.SIZE (RFC 3516: the section is part numbers only)
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None  # <offset.count>


@dataclass(frozen=True, slots=True)
class Fetch:
    seqset: SeqSet
    atts: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 CHANGEDSINCE
    vanished: bool = False  # RFC 7162 §3.2.6 VANISHED (UID FETCH, with CHANGEDSINCE, QRESYNC enabled)


@dataclass(frozen=True, slots=True)
class Store:
    seqset: SeqSet
    op: str  # "add", "remove", "replace"
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 UNCHANGEDSINCE


@dataclass(frozen=True, slots=True)
class SeqKey:
    """Messages by sequence number (`1:5`, `*`)."""

    seqset: SeqSet


@dataclass(frozen=True, slots=True)
class UidKey:
    """`UID 4:*`: `*` is the largest UID in the mailbox."""

    seqset: SeqSet


@dataclass(frozen=True, slots=True)
class RecentKey:
    present: bool = True


@dataclass(frozen=True, slots=True)
class Search:
    key: object  # sk.SearchKey | SeqKey | UidKey | RecentKey, combined with sk.And/Or/Not
    charset: str | None = None
    uses_modseq: bool = False
    # RFC 4731 ESEARCH: the RETURN options (MIN, MAX, ALL, COUNT, SAVE of RFC 5182, PARTIAL of RFC 9394,
    # UPDATE and CONTEXT of RFC 5267 §4.1; RETURN () and RETURN (UPDATE) are ALL); None: plain SEARCH
    returns: frozenset[str] | None = None
    partial: tuple[int, int] | None = None  # PARTIAL's range, low <= high; negative: counted from the end


@dataclass(frozen=True, slots=True)
class Sort:  # RFC 5256 SORT, RFC 5267 ESORT's RETURN (in `search`)
    criteria: tuple[tuple[str, bool], ...]  # (name in lower case, reverse), the most significant first
    search: Search


@dataclass(frozen=True, slots=True)
class CancelUpdate:  # RFC 5267 §4.3: the tags of the searches whose updates end
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Thread:  # RFC 5256 THREAD
    algorithm: str  # lower case
    search: Search


@dataclass(frozen=True, slots=True)
class Id:
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Compress:  # RFC 4978
    mechanism: str


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]


# --- NOTIFY (RFC 5465) -------------------------------------------------------------------------------

NOTIFY_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
                 "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")  # fmt: skip


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    """One event-group: which mailboxes (`filter`: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL,
    SUBSCRIBED, SUBTREE, MAILBOXES; the names for the last two) and which events (empty: NONE)."""

    filter: str
    mailboxes: frozenset[str] = frozenset()  # a set: an event's mailbox is looked up, not searched for
    events: tuple[str, ...] = ()  # names as NOTIFY_EVENTS spells them; others as written (BADEVENT)
    fetch: tuple[FetchAtt, ...] = ()  # MessageNew's fetch-att, for the selected mailbox


@dataclass(frozen=True, slots=True)
class Notify:
    groups: tuple[NotifyGroup, ...] | None  # None: NOTIFY NONE
    status: bool = False  # SET STATUS: a STATUS now for every mailbox the groups name
