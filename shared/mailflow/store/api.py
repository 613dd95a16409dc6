"""The mailbox-store contract, seen from its users (smtp-ingress, delivery, imap-pop3).

Protocols, one per kind of caller:
  Directory  - "who is this address?", "is this password right?" (smtp-ingress, delivery, imap-pop3)
  Deliverer  - "put these messages into these users' mailboxes" (delivery, the MDA)
  Mailboxes  - everything IMAP and POP3 do with one user's mail (imap-pop3)
  SieveScripts - a user's Sieve scripts (imap-pop3's ManageSieve); SieveSource - the active one (delivery)

Errors, the same from every implementation:
  mailflow.errors.ServiceUnavailable  the store did not answer: temporary (451, NO [UNAVAILABLE], -ERR [SYS/TEMP])
  mailflow.errors.NotFound           no such mailbox or message *for this user* (never says if another user has it)
  mailflow.errors.Conflict           it exists already (CREATE), or the POP3 maildrop is locked
  mailflow.errors.Invalid            a name or argument that can never work (bad mailbox name, delete INBOX)
  mailflow.errors.QuotaExceeded      the user's quota would be exceeded (APPEND/COPY: NO [OVERQUOTA]); for
                                     Sieve scripts its text starts "maxsize:" or "maxscripts:"
Every Mailboxes call takes the `Principal` returned by `authenticate`; the store scopes every query
to that principal's user, so a mailbox id or UID of another user is simply NotFound.
Mailbox names are UTF-8 strings with "/" as the hierarchy delimiter; "INBOX" is case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from mailflow.store.search import SearchKey

DELIMITER = "/"

# IMAP system flags. Keywords are any other atom; the store keeps both.
SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"
SYSTEM_FLAGS = (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)

SpecialUse = Literal["\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged"]


# --- Directory ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated user. `token` is opaque and proves the authentication to the store."""

    user_id: int  # never reused: a deleted user's id is never given to another
    address: str  # the login, e.g. "alice@example.test"
    addresses: tuple[str, ...] = ()  # every address the user may send as (own address and its aliases)
    token: str = ""
    generation: int = 0  # the user's credential version the token carries (see UserRevoked)


RecipientStatus = Literal["local", "unknown_user", "not_local"]


@dataclass(frozen=True)
class Resolution:
    """Where mail to an address goes, after aliases, catch-all and plus-addressing."""

    address: str
    status: RecipientStatus  # local: deliver to `users` and `forward`; unknown_user: 550 5.1.1; not_local: relay or 550 5.7.1
    users: tuple[str, ...] = ()  # login addresses of the local users that receive it
    # addresses in other domains that aliases send copies to: smtp-ingress queues each as a recipient of
    # its own (a remote delivery with its own result, retries and DSN); the store never delivers them
    forward: tuple[str, ...] = ()


class Directory(Protocol):
    async def resolve(self, address: str) -> Resolution:
        """An address in a local domain is never "not_local", even one whose local part is unusable."""
        ...

    async def is_local_domain(self, domain: str) -> bool:
        """Is mail for this domain ours? Locality is the domain's: ask by domain, cache by domain."""
        ...

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        """None for a wrong user or password, or a disabled user (the caller cannot tell which).
        `service` is for the log."""
        ...

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        """SCRAM-SHA-256 (mailflow.scram_auth): the user's (salt, iterations); for an unknown or disabled
        user, or one with no verifier yet, made-up values that stay the same."""
        ...

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "imap"
    ) -> tuple[Principal, bytes] | None:
        """(principal, server signature) when the proof checks out with the user's verifier, else None."""
        ...

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        """Those of these Principal tokens the store no longer accepts: the password changed, the user
        was disabled or deleted, or the token expired. Their sessions must end."""
        ...


# --- Deliverer --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliverItem:
    key: str  # idempotency key, e.g. "<queue_id>/<recipient>": the same key is stored once per user
    recipient: str  # the envelope recipient; the store resolves aliases itself
    body: bytes
    mailbox: str = "INBOX"
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None  # default: now
    queue_id: str = ""
    trace_id: str = ""
    junk: bool = False  # into each user's \Junk mailbox instead (made as "Junk" if the user has none)
    create: bool = False  # make `mailbox` when the user has none of that name (Sieve fileinto :create)


DeliverStatus = Literal["stored", "duplicate", "unknown_user", "quota_exceeded", "failed"]


@dataclass(frozen=True)
class DeliverResult:
    key: str
    status: DeliverStatus  # stored/duplicate: done; unknown_user: bounce; quota_exceeded: see `permanent`
    permanent: bool = False  # quota: 552 5.2.2 if True, else 452 4.2.2 (retry later)
    detail: str = ""
    users: tuple[str, ...] = ()  # who received it (aliases may expand to several users)


class Deliverer(Protocol):
    async def deliver(self, items: list[DeliverItem]) -> list[DeliverResult]:
        """One result per item, in order. Durable (committed, body fsynced) when it returns."""
        ...


# --- Mailboxes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxInfo:
    id: int
    name: str
    special_use: str | None = None
    subscribed: bool = False
    has_children: bool = False
    selectable: bool = True  # False for a \Noselect parent left behind by DELETE


@dataclass(frozen=True)
class MailboxStatus:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    recent: int
    highestmodseq: int
    size: int = 0  # octets of all messages (STATUS SIZE, quotas)


@dataclass(frozen=True)
class QuotaUse:
    """A user's storage against their quota (IMAP QUOTA, RFC 9208: one quota root per user)."""

    used_bytes: int  # octets of every message in every mailbox of the user
    messages: int
    limit_bytes: int | None  # None: no limit


@dataclass(frozen=True)
class DeletedUse:
    """The messages of one mailbox flagged \\Deleted: what EXPUNGE would remove (STATUS DELETED and
    DELETED-STORAGE, RFC 9051 §6.3.11 and RFC 9208 §4.4)."""

    messages: int
    size: int  # octets


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    flags: frozenset[str]
    modseq: int
    size: int = 0
    internal_date: datetime | None = None
    email_id: int = 0  # RFC 8474 EMAILID: the stored body's id (a COPY shares it)


@dataclass
class Selected:
    """What a session needs to open a mailbox: its status and one row per message, in UID order."""

    status: MailboxStatus
    uids: list[int]
    flags: list[frozenset[str]]
    modseqs: list[int]
    recent: set[int] = field(default_factory=set)  # UIDs this session is the first to see (\Recent)
    permanent_keywords: bool = True
    # select(vanished_since=m), QRESYNC: UIDs expunged after MODSEQ m, ascending, from the listing's
    # snapshot; vanished_complete False: the store pruned tombstones past m, the list may lack some
    vanished: list[int] | None = None
    vanished_complete: bool = True


@dataclass
class Changes:
    """What changed in a mailbox after `since_modseq`, for untagged EXISTS/FETCH/EXPUNGE and QRESYNC."""

    status: MailboxStatus
    updated: list[MessageMeta]  # new messages and messages whose flags changed, in UID order
    expunged: list[int]  # UIDs removed after since_modseq, in UID order
    # False: the store pruned tombstones past since_modseq (it keeps the newest per mailbox), so
    # `expunged` may lack some: the caller must compare the UIDs it knows with those still there
    expunged_complete: bool = True


@dataclass(frozen=True)
class StoreResult:
    updated: list[MessageMeta]  # the messages' flags and modseq after the change
    modified: list[int] = field(default_factory=list)  # UIDs refused by UNCHANGEDSINCE (RFC 7162)


@dataclass(frozen=True)
class CopyResult:
    uidvalidity: int  # of the destination (UIDPLUS COPYUID)
    source_uids: list[int]
    dest_uids: list[int]


@dataclass(frozen=True)
class AppendResult:
    uidvalidity: int
    uids: list[int]  # one per message appended, consecutive

    @property
    def uid(self) -> int:
        """The UID of a single APPEND."""
        return self.uids[0]


FlagOp = Literal["add", "remove", "replace"]
SaveDates = dict[int, datetime | None]  # uid -> RFC 8514 save date (None: not known)


class Mailboxes(Directory, Protocol):
    async def list_mailboxes(self, p: Principal) -> list[MailboxInfo]: ...
    async def create_mailbox(self, p: Principal, name: str, special_use: str | None = None) -> MailboxInfo: ...
    async def delete_mailbox(self, p: Principal, name: str) -> None: ...
    async def rename_mailbox(self, p: Principal, old: str, new: str) -> None:
        """RFC 3501: renaming INBOX moves its messages to the new mailbox and leaves INBOX empty."""
        ...

    async def subscribe(self, p: Principal, name: str, subscribed: bool) -> None: ...
    async def subscriptions(self, p: Principal) -> list[str]:
        """Every subscribed name, sorted, whether or not a mailbox has it now (DELETE keeps the
        subscription, RFC 3501 §6.3.6; LIST (SUBSCRIBED) shows it \\NonExistent, RFC 5258)."""
        ...

    async def status(self, p: Principal, name: str) -> MailboxStatus: ...
    async def select(
        self, p: Principal, name: str, claim_recent: bool = True, vanished_since: int | None = None
    ) -> Selected:
        """SELECT claims the mailbox's \\Recent messages for this session alone (RFC 3501 §2.3.2); EXAMINE
        (claim_recent=False) sees the unclaimed ones as \\Recent and leaves them so. `vanished_since`
        (QRESYNC, RFC 7162 §3.2.5): fill Selected.vanished with the UIDs expunged after that MODSEQ."""
        ...

    async def claim_recent(self, p: Principal, mailbox_id: int, upto: int, claim: bool = True) -> int | None:
        """A session with the mailbox selected learnt of new messages below UID `upto`: those from the
        returned UID on are \\Recent to it (with `claim`, to it alone). None: none of them are."""
        ...

    async def quota(self, p: Principal) -> QuotaUse: ...
    async def deleted(self, p: Principal, name: str) -> DeletedUse:
        """NotFound for a mailbox that does not exist."""
        ...

    async def changes(self, p: Principal, mailbox_id: int, since_modseq: int) -> Changes: ...

    async def fetch_meta(self, p: Principal, mailbox_id: int, uids: list[int]) -> list[MessageMeta]: ...
    async def fetch_save_dates(self, p: Principal, mailbox_id: int, uids: list[int]) -> SaveDates:
        """uid -> when the message came into this mailbox (RFC 8514 save date); None for one stored before
        the store kept save dates. Expunged UIDs are absent."""
        ...

    async def fetch_parsed(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        """uid -> mailflow.mime.to_json(...) of the message, parsed once when it was stored."""
        ...

    async def fetch_bodies(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        """uid -> the raw message. Missing UIDs (expunged meanwhile) are absent from the result."""
        ...

    async def fetch_sections(self, p: Principal, mailbox_id: int, uids: list[int], spec: str) -> dict[int, bytes]:
        """uid -> BODY[<spec>] (RFC 3501 §6.4.5), cut in the store: headers and parts travel without their
        whole bodies. Invalid for a section-spec that can never be right; missing UIDs are absent."""
        ...

    async def store_flags(
        self,
        p: Principal,
        mailbox_id: int,
        uids: list[int],
        op: FlagOp,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult: ...

    async def expunge(self, p: Principal, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (only those among `uids`, if given). Returns the removed UIDs."""
        ...

    async def copy(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult: ...
    async def move(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult: ...
    async def append(
        self,
        p: Principal,
        name: str,
        body: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        """One message: append_many with one item."""
        ...

    async def append_many(
        self, p: Principal, name: str, items: list[tuple[bytes, frozenset[str], datetime | None]]
    ) -> AppendResult:
        """MULTIAPPEND (RFC 3502): every (message, flags, internal date), with consecutive UIDs, or none
        (the first failure is raised, nothing is stored)."""
        ...

    async def search(self, p: Principal, mailbox_id: int, key: SearchKey) -> list[int]:
        """UIDs matching `key`, ascending. Sequence numbers, \\Recent and '*' are resolved by the caller."""
        ...

    async def sort(
        self, p: Principal, mailbox_id: int, key: SearchKey, criteria: list[tuple[str, bool]]
    ) -> list[int]:
        """UIDs matching `key` in SORT order (RFC 5256): `criteria` are (name, reverse), the most
        significant first; names are SORT_CRITERIA. Ties are in UID order."""
        ...

    async def thread(
        self, p: Principal, mailbox_id: int, key: SearchKey, algorithm: str
    ) -> list[tuple[int, int]]:
        """THREAD (RFC 5256) of the messages matching `key`, `algorithm` one of THREAD_ALGORITHMS: every
        thread as a preorder of (uid, depth), depth 0 for each thread's root, uid 0 for a dummy (a
        missing parent holding several threads of one subject). Flat, so no reply chain nests."""
        ...

    async def pop3_lock(self, p: Principal) -> str:
        """Take the RFC 1939 maildrop lock; returns a lock token. Conflict if another session holds it."""
        ...

    async def pop3_unlock(self, p: Principal, token: str) -> None: ...


SORT_CRITERIA = ("arrival", "cc", "date", "from", "size", "subject", "to", "displayfrom", "displayto")
THREAD_ALGORITHMS = ("orderedsubject", "references")


# --- Sieve scripts ------------------------------------------------------------------------------------

SCRIPT_TOO_LARGE, TOO_MANY_SCRIPTS = "maxsize", "maxscripts"  # how a script's QuotaExceeded text starts


@dataclass(frozen=True)
class ActiveScript:
    """A user's active Sieve script, with the names of the user's mailboxes when it was read."""

    name: str
    script: bytes
    mailboxes: tuple[str, ...] = ()
    others: tuple[tuple[str, bytes], ...] = ()  # the user's other scripts (for include), when it says "include"


class SieveScripts(Protocol):
    """One user's named scripts (RFC 5804), at most one active. NotFound for a name the user has not;
    Conflict to delete the active script or rename onto a name in use; Invalid for a bad name."""

    async def list_scripts(self, p: Principal) -> list[tuple[str, bool]]:
        """(name, active) by name."""
        ...

    async def get_script(self, p: Principal, name: str) -> bytes: ...
    async def have_space(self, p: Principal, name: str, size: int) -> None:
        """QuotaExceeded unless a script `name` of `size` octets could be stored now."""
        ...

    async def put_script(self, p: Principal, name: str, script: bytes) -> None:
        """Store (or replace) a script; it stays active if it was. The caller has checked its syntax."""
        ...

    async def set_active(self, p: Principal, name: str) -> None:
        """"" leaves no script active."""
        ...

    async def delete_script(self, p: Principal, name: str) -> None: ...
    async def rename_script(self, p: Principal, old: str, new: str) -> None: ...


class SieveSource(Protocol):
    async def active_script(self, login: str) -> ActiveScript | None:
        """The active script of the local user `login` (a Resolution.users entry), or None."""
        ...

    async def vacation_due(self, login: str, key: str, days: int) -> bool:
        """May the vacation reply `key` (SHA-256 hex of sender and handle) go now? True records it for
        `days` days (RFC 5230 §4.1)."""
        ...
