"""The mailbox-store contract (`mailflow.store.api`) in memory, for protocol and unit tests.

`MemoryStore` implements `Directory`, `Deliverer` and `Mailboxes` with the documented semantics of the
real store: UIDs strictly increasing per mailbox and never reused, a fresh UIDVALIDITY per mailbox,
a MODSEQ per change with expunge tombstones (so `changes()` reports removals), \\Recent claimed by the
first session that selects, the POP3 maildrop lock, quotas, aliases, catch-all and plus-addressing.
Each change also goes to the `listeners` as the `MailboxEvent` the real store would publish on NATS.

Nothing here awaits, so every call is atomic in an asyncio program. Errors are those of `api.py`:
NotFound (also for another user's mailbox id), Conflict, Invalid, QuotaExceeded; a principal whose
token this store never issued (or has expired) gets SessionExpired, as from StoreClient. Passwords are
kept as salted PBKDF2 hashes. Test helpers that the Protocol does not have: `add_domain`, `add_user`,
`add_alias`, `set_password`, `set_quota`, `user_id`, `expire_sessions`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mailflow.contracts.messages import MailboxEvent
from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded
from mailflow.store import search as sk
from mailflow.store.api import (
    DELETED,
    DELIMITER,
    SEEN,
    AppendResult,
    Changes,
    CopyResult,
    DeliverItem,
    DeliverResult,
    FlagOp,
    MailboxInfo,
    MailboxStatus,
    MessageMeta,
    Principal,
    Resolution,
    Selected,
    StoreResult,
)
from mailflow.store.client import SessionExpired

DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

_uidvalidity = itertools.count(int(datetime.now(UTC).timestamp()))


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)


def normalize_name(name: str) -> str:
    """'inbox' -> 'INBOX' (and 'Inbox/x' -> 'INBOX/x'); Invalid for names that can never exist."""
    if not name or name.startswith(DELIMITER) or name.endswith(DELIMITER) or DELIMITER * 2 in name:
        raise Invalid(f"bad mailbox name {name!r}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name) or len(name.encode()) > 1000:
        raise Invalid(f"bad mailbox name {name!r}")
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


@dataclass
class _Message:
    uid: int
    flags: frozenset[str]
    modseq: int
    body: bytes
    internal_date: datetime
    key: str = ""
    queue_id: str = ""
    parsed: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.body)

    def meta(self) -> MessageMeta:
        return MessageMeta(self.uid, self.flags, self.modseq, self.size, self.internal_date)


@dataclass
class _Mailbox:
    id: int
    name: str
    uidvalidity: int
    special_use: str | None = None
    selectable: bool = True
    uidnext: int = 1
    highestmodseq: int = 1
    recent_from: int = 1  # UIDs >= this are \Recent for the next session that claims them
    messages: dict[int, _Message] = field(default_factory=dict)  # insertion order is UID order
    tombstones: list[tuple[int, int]] = field(default_factory=list)  # (modseq, uid)

    def bump(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq


@dataclass
class _User:
    id: int
    address: str
    salt: bytes
    hash: bytes
    quota_bytes: int | None = None
    mailboxes: dict[str, _Mailbox] = field(default_factory=dict)  # by name
    subscriptions: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)  # idempotency keys already stored
    pop3_lock: str | None = None

    def used(self) -> int:
        return sum(m.size for mb in self.mailboxes.values() for m in mb.messages.values())


class MemoryStore:
    def __init__(self) -> None:
        self.domains: set[str] = set()
        self.users: dict[str, _User] = {}  # by lower-case address
        self.aliases: dict[str, tuple[str, ...]] = {}  # lower-case address or "@domain" -> targets
        self.listeners: list[Callable[[MailboxEvent], None]] = []
        self._tokens: dict[str, int] = {}  # principal token -> user id
        self._by_id: dict[int, _User] = {}
        self._mailbox_ids = itertools.count(1)
        self._user_ids = itertools.count(1)

    # --- test helpers (not part of the Protocol) ---------------------------------------------------

    def add_domain(self, name: str) -> None:
        self.domains.add(name.lower())

    def add_user(self, address: str, password: str, quota_bytes: int | None = None) -> int:
        address = address.lower()
        if address in self.users:
            raise Conflict(f"user {address} exists")
        self.domains.add(address.rpartition("@")[2])
        salt = os.urandom(16)
        user = _User(next(self._user_ids), address, salt, _hash(password, salt), quota_bytes)
        for name, role in DEFAULT_MAILBOXES:
            self._new_mailbox(user, name, role)
            user.subscriptions.add(name)
        self.users[address] = user
        self._by_id[user.id] = user
        return user.id

    def add_alias(self, address: str, targets: list[str]) -> None:
        self.aliases[address.lower()] = tuple(t.lower() for t in targets)

    def set_password(self, address: str, password: str) -> None:
        user = self.users[address.lower()]
        user.salt = os.urandom(16)
        user.hash = _hash(password, user.salt)

    def set_quota(self, address: str, quota_bytes: int | None) -> None:
        self.users[address.lower()].quota_bytes = quota_bytes

    def user_id(self, address: str) -> int:
        return self.users[address.lower()].id

    def expire_sessions(self) -> None:
        """Every principal issued so far stops working (as when the store's session key changes)."""
        self._tokens.clear()

    # --- internals -----------------------------------------------------------------------------------

    def _new_mailbox(self, user: _User, name: str, special_use: str | None = None) -> _Mailbox:
        mb = _Mailbox(next(self._mailbox_ids), name, next(_uidvalidity), special_use)
        user.mailboxes[name] = mb
        return mb

    def _user(self, p: Principal) -> _User:
        uid = self._tokens.get(p.token)
        if uid is None or uid != p.user_id or uid not in self._by_id:
            raise SessionExpired("session expired, log in again")
        return self._by_id[uid]

    def _by_name(self, user: _User, name: str) -> _Mailbox:
        mb = user.mailboxes.get(normalize_name(name))
        if mb is None or not mb.selectable:
            raise NotFound(f"no mailbox {name!r}")
        return mb

    def _by_mailbox_id(self, user: _User, mailbox_id: int) -> _Mailbox:
        for mb in user.mailboxes.values():
            if mb.id == mailbox_id and mb.selectable:
                return mb
        raise NotFound(f"no mailbox {mailbox_id}")

    def _emit(
        self, user: _User, mb: _Mailbox, kind: str, uids: list[int] | None = None, added: _Message | None = None
    ) -> None:
        """`added`: the one message an "appended" event announces, whose flags it then carries."""
        event = MailboxEvent(
            user_id=user.id,
            mailbox_id=mb.id,
            mailbox=mb.name,
            kind=kind,
            uids=uids or [],
            modseq=mb.highestmodseq,
            flags=[sorted(added.flags)] if added is not None else None,
            since=added.modseq - 1 if added is not None else 0,
        )
        for listener in list(self.listeners):
            listener(event)

    def _check_quota(self, user: _User, extra: int) -> None:
        if user.quota_bytes is not None and user.used() + extra > user.quota_bytes:
            raise QuotaExceeded(permanent=extra > user.quota_bytes)

    def _add(self, mb: _Mailbox, body: bytes, flags: frozenset[str], date: datetime | None, **kw) -> _Message:
        uid = mb.uidnext
        mb.uidnext += 1
        msg = _Message(
            uid, frozenset(flags) - {"\\Recent"}, mb.bump(), bytes(body), date or datetime.now(UTC), **kw
        )
        mb.messages[uid] = msg
        return msg

    def _remove(self, mb: _Mailbox, uids: list[int]) -> None:
        if not uids:
            return
        modseq = mb.bump()
        for uid in uids:
            del mb.messages[uid]
            mb.tombstones.append((modseq, uid))

    def _status(self, mb: _Mailbox) -> MailboxStatus:
        msgs = mb.messages.values()
        return MailboxStatus(
            id=mb.id,
            name=mb.name,
            uidvalidity=mb.uidvalidity,
            uidnext=mb.uidnext,
            messages=len(mb.messages),
            unseen=sum(1 for m in msgs if SEEN not in m.flags),
            recent=sum(1 for m in msgs if m.uid >= mb.recent_from),
            highestmodseq=mb.highestmodseq,
            size=sum(m.size for m in msgs),
        )

    def _has_children(self, user: _User, name: str) -> bool:
        prefix = name + DELIMITER
        return any(n.startswith(prefix) for n in user.mailboxes)

    # --- Directory ------------------------------------------------------------------------------------

    async def resolve(self, address: str) -> Resolution:
        address = address.strip().lower()
        local, _, domain = address.rpartition("@")
        if domain not in self.domains:
            return Resolution(address, "not_local")
        if address in self.users:
            return Resolution(address, "local", (address,))
        if address in self.aliases:
            return Resolution(address, "local", self.aliases[address])
        base = local.split("+", 1)[0] + "@" + domain
        if "+" in local and base in self.users:
            return Resolution(address, "local", (base,))
        if "@" + domain in self.aliases:
            return Resolution(address, "local", self.aliases["@" + domain])
        return Resolution(address, "unknown_user")

    async def is_local_domain(self, domain: str) -> bool:
        return domain.strip().rstrip(".").lower() in self.domains

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        return {t for t in tokens if self._tokens.get(t) not in self._by_id}

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        user = self.users.get(username.strip().lower())
        if user is None or not hmac.compare_digest(_hash(password, user.salt), user.hash):
            return None
        token = secrets.token_urlsafe(16)
        self._tokens[token] = user.id
        aliases = tuple(
            a for a, targets in self.aliases.items() if user.address in targets and not a.startswith("@")
        )
        return Principal(user.id, user.address, (user.address, *aliases), token)

    # --- Deliverer ------------------------------------------------------------------------------------

    async def deliver(self, items: list[DeliverItem]) -> list[DeliverResult]:
        results = []
        for item in items:
            res = await self.resolve(item.recipient)
            if res.status != "local":
                results.append(DeliverResult(item.key, "unknown_user"))
                continue
            users = [self.users[a] for a in res.users if a in self.users]
            if not users:
                results.append(DeliverResult(item.key, "unknown_user"))
                continue
            stored, duplicate, over = [], [], None
            for user in users:
                if item.key and item.key in user.delivered:
                    duplicate.append(user.address)
                    continue
                try:
                    self._check_quota(user, len(item.body))
                except QuotaExceeded as exc:
                    over = exc
                    continue
                mb = user.mailboxes.get(normalize_name(item.mailbox)) if item.mailbox else None
                if mb is None or not mb.selectable:
                    mb = user.mailboxes["INBOX"]
                msg = self._add(
                    mb,
                    item.body,
                    frozenset(item.flags),
                    item.internal_date,
                    key=item.key,
                    queue_id=item.queue_id,
                )
                user.delivered.add(item.key)
                stored.append(user.address)
                self._emit(user, mb, "appended", [msg.uid], added=msg)
            if stored:
                results.append(DeliverResult(item.key, "stored", users=tuple(stored)))
            elif over is not None:
                results.append(
                    DeliverResult(item.key, "quota_exceeded", permanent=over.permanent, detail="quota")
                )
            else:
                results.append(DeliverResult(item.key, "duplicate", users=tuple(duplicate)))
        return results

    # --- Mailboxes: the folder tree -------------------------------------------------------------------

    async def list_mailboxes(self, p: Principal) -> list[MailboxInfo]:
        user = self._user(p)
        return [
            MailboxInfo(
                mb.id,
                mb.name,
                mb.special_use,
                mb.name in user.subscriptions,
                self._has_children(user, mb.name),
                mb.selectable,
            )
            for mb in sorted(user.mailboxes.values(), key=lambda m: m.name)
        ]

    async def create_mailbox(self, p: Principal, name: str, special_use: str | None = None) -> MailboxInfo:
        user = self._user(p)
        name = normalize_name(name)
        existing = user.mailboxes.get(name)
        if existing is not None and existing.selectable:
            raise Conflict(f"mailbox {name!r} exists")
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):  # RFC 3501 §6.3.3: create the superior names too
            parent = DELIMITER.join(parts[:i])
            if parent not in user.mailboxes:
                self._new_mailbox(user, parent)
        if existing is not None:  # a \Noselect parent left by DELETE becomes a real mailbox again
            del user.mailboxes[name]
        mb = self._new_mailbox(user, name, special_use)
        self._emit(user, mb, "mailbox_created")
        return MailboxInfo(
            mb.id, mb.name, special_use, name in user.subscriptions, self._has_children(user, name)
        )

    async def delete_mailbox(self, p: Principal, name: str) -> None:
        user = self._user(p)
        name = normalize_name(name)
        if name == "INBOX":
            raise Invalid("INBOX cannot be deleted")
        mb = user.mailboxes.get(name)
        if mb is None:
            raise NotFound(f"no mailbox {name!r}")
        if self._has_children(user, name):
            if not mb.selectable:
                raise Invalid(f"{name!r} has children and no messages to delete")
            # RFC 3501 §6.3.4: the messages go, the name stays as \Noselect for its children
            self._remove(mb, list(mb.messages))
            mb.selectable = False
        else:
            del user.mailboxes[name]
        self._emit(user, mb, "mailbox_deleted")

    async def rename_mailbox(self, p: Principal, old: str, new: str) -> None:
        user = self._user(p)
        old, new = normalize_name(old), normalize_name(new)
        src = user.mailboxes.get(old)
        if src is None or (not src.selectable and not self._has_children(user, old)):
            raise NotFound(f"no mailbox {old!r}")
        dest = user.mailboxes.get(new)
        if dest is not None:
            raise Conflict(f"mailbox {new!r} exists")
        if new == old or new.startswith(old + DELIMITER):
            raise Invalid("cannot rename a mailbox into itself")
        parts = new.split(DELIMITER)
        for i in range(1, len(parts)):
            parent = DELIMITER.join(parts[:i])
            if parent not in user.mailboxes:
                self._new_mailbox(user, parent)
        if old == "INBOX":
            # RFC 3501 §6.3.5: INBOX's messages move to the new name; INBOX stays, empty
            target = self._new_mailbox(user, new)
            moved = list(src.messages.values())
            for m in moved:
                self._add(target, m.body, m.flags, m.internal_date, key=m.key, queue_id=m.queue_id)
            self._remove(src, [m.uid for m in moved])
            self._emit(user, src, "expunged", [m.uid for m in moved])
            self._emit(user, target, "mailbox_created")
            return
        renamed = [n for n in user.mailboxes if n == old or n.startswith(old + DELIMITER)]
        for n in renamed:
            mb = user.mailboxes.pop(n)
            mb.name = new + n[len(old) :]
            user.mailboxes[mb.name] = mb
            if n in user.subscriptions:
                user.subscriptions.discard(n)
                user.subscriptions.add(mb.name)
            self._emit(user, mb, "mailbox_renamed")

    async def subscribe(self, p: Principal, name: str, subscribed: bool) -> None:
        user = self._user(p)
        name = normalize_name(name)
        if subscribed:
            if name not in user.mailboxes:
                raise NotFound(f"no mailbox {name!r}")
            user.subscriptions.add(name)
        else:
            user.subscriptions.discard(name)

    # --- Mailboxes: one mailbox -----------------------------------------------------------------------

    async def status(self, p: Principal, name: str) -> MailboxStatus:
        return self._status(self._by_name(self._user(p), name))

    async def select(self, p: Principal, name: str, claim_recent: bool = True) -> Selected:
        mb = self._by_name(self._user(p), name)
        status = self._status(mb)
        msgs = list(mb.messages.values())
        recent = {m.uid for m in msgs if m.uid >= mb.recent_from}
        if claim_recent:
            mb.recent_from = mb.uidnext
        return Selected(
            status,
            [m.uid for m in msgs],
            [m.flags for m in msgs],
            [m.modseq for m in msgs],
            recent if claim_recent else set(),
        )

    async def changes(self, p: Principal, mailbox_id: int, since_modseq: int) -> Changes:
        mb = self._by_mailbox_id(self._user(p), mailbox_id)
        updated = [m.meta() for m in mb.messages.values() if m.modseq > since_modseq]
        expunged = sorted(uid for modseq, uid in mb.tombstones if modseq > since_modseq)
        return Changes(self._status(mb), updated, expunged)

    async def fetch_meta(self, p: Principal, mailbox_id: int, uids: list[int]) -> list[MessageMeta]:
        mb = self._by_mailbox_id(self._user(p), mailbox_id)
        return [mb.messages[u].meta() for u in sorted(set(uids)) if u in mb.messages]

    async def fetch_parsed(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        from mailflow import mime

        mb = self._by_mailbox_id(self._user(p), mailbox_id)
        out = {}
        for u in uids:
            msg = mb.messages.get(u)
            if msg is None:
                continue
            if msg.parsed is None:
                msg.parsed = mime.to_json(mime.parse(msg.body))
            out[u] = msg.parsed
        return out

    async def fetch_bodies(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        mb = self._by_mailbox_id(self._user(p), mailbox_id)
        return {u: mb.messages[u].body for u in uids if u in mb.messages}

    async def store_flags(
        self,
        p: Principal,
        mailbox_id: int,
        uids: list[int],
        op: FlagOp,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        user = self._user(p)
        mb = self._by_mailbox_id(user, mailbox_id)
        flags = frozenset(flags) - {"\\Recent"}
        updated, modified, changed = [], [], []
        modseq = None
        for u in sorted(set(uids)):
            msg = mb.messages.get(u)
            if msg is None:
                continue
            if unchanged_since is not None and msg.modseq > unchanged_since:
                modified.append(u)
                continue
            new = msg.flags | flags if op == "add" else msg.flags - flags if op == "remove" else flags
            if new != msg.flags:
                if modseq is None:
                    modseq = mb.bump()
                msg.flags, msg.modseq = frozenset(new), modseq
                changed.append(u)
            updated.append(msg.meta())
        if changed:
            self._emit(user, mb, "flags", changed)
        return StoreResult(updated, modified)

    async def expunge(self, p: Principal, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        user = self._user(p)
        mb = self._by_mailbox_id(user, mailbox_id)
        wanted = None if uids is None else set(uids)
        gone = [u for u, m in mb.messages.items() if DELETED in m.flags and (wanted is None or u in wanted)]
        self._remove(mb, gone)
        if gone:
            self._emit(user, mb, "expunged", gone)
        return gone

    async def copy(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        user = self._user(p)
        src = self._by_mailbox_id(user, mailbox_id)
        target = self._by_name(user, dest)
        msgs = [src.messages[u] for u in sorted(set(uids)) if u in src.messages]
        self._check_quota(user, sum(m.size for m in msgs))
        new = [self._add(target, m.body, m.flags, m.internal_date, queue_id=m.queue_id) for m in msgs]
        if new:
            self._emit(user, target, "appended", [m.uid for m in new])
        return CopyResult(target.uidvalidity, [m.uid for m in msgs], [m.uid for m in new])

    async def move(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        user = self._user(p)
        src = self._by_mailbox_id(user, mailbox_id)
        target = self._by_name(user, dest)
        if target is src:
            raise Invalid("source and destination are the same mailbox")
        msgs = [src.messages[u] for u in sorted(set(uids)) if u in src.messages]
        new = [self._add(target, m.body, m.flags, m.internal_date, queue_id=m.queue_id) for m in msgs]
        self._remove(src, [m.uid for m in msgs])
        if new:
            self._emit(user, target, "appended", [m.uid for m in new])
            self._emit(user, src, "expunged", [m.uid for m in msgs])
        return CopyResult(target.uidvalidity, [m.uid for m in msgs], [m.uid for m in new])

    async def append(
        self,
        p: Principal,
        name: str,
        body: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        user = self._user(p)
        mb = self._by_name(user, name)
        self._check_quota(user, len(body))
        msg = self._add(mb, body, flags, internal_date)
        self._emit(user, mb, "appended", [msg.uid], added=msg)
        return AppendResult(mb.uidvalidity, msg.uid)

    async def search(self, p: Principal, mailbox_id: int, key: sk.SearchKey) -> list[int]:
        mb = self._by_mailbox_id(self._user(p), mailbox_id)
        return [m.uid for m in mb.messages.values() if _matches(key, m)]

    # --- POP3 -------------------------------------------------------------------------------------------

    async def pop3_lock(self, p: Principal) -> str:
        user = self._user(p)
        if user.pop3_lock is not None:
            raise Conflict("maildrop is locked by another session")
        user.pop3_lock = secrets.token_hex(8)
        return user.pop3_lock

    async def pop3_unlock(self, p: Principal, token: str) -> None:
        user = self._user(p)
        if user.pop3_lock == token:
            user.pop3_lock = None

    async def close(self) -> None:
        pass


# --- SEARCH evaluation ---------------------------------------------------------------------------------


def _header_values(msg: _Message, name: str) -> list[str]:
    from mailflow import mime

    if msg.parsed is None:
        msg.parsed = mime.to_json(mime.parse(msg.body))
    return [v for n, v in mime.from_json(msg.parsed).headers if n == name]


def _sent_date(msg: _Message):
    values = _header_values(msg, "date")
    if not values:
        return None
    try:
        return parsedate_to_datetime(values[0]).date()
    except (TypeError, ValueError, IndexError):
        return None


def _matches(key: sk.SearchKey, msg: _Message) -> bool:
    match key:
        case sk.All():
            return True
        case sk.And(keys=keys):
            return all(_matches(k, msg) for k in keys)
        case sk.Or(a=a, b=b):
            return _matches(a, msg) or _matches(b, msg)
        case sk.Not(key=inner):
            return not _matches(inner, msg)
        case sk.Uids(ranges=ranges):
            return any(lo <= msg.uid <= hi for lo, hi in ranges)
        case sk.Flag(flag=flag, present=present):
            return (flag in msg.flags) == present
        case sk.Header(field=name, value=value):
            values = _header_values(msg, name.lower())
            return any(value.lower() in v.lower() for v in values)
        case sk.Text(where=where, value=value):
            text = msg.body.decode("utf-8", "replace").lower()
            if where == "body":
                cut = text.find("\r\n\r\n")
                text = text[cut + 4 :] if cut >= 0 else ""
            headers = " ".join(v for n, v in _all_headers(msg)).lower() if where == "text" else ""
            return value.lower() in text or value.lower() in headers
        case sk.Date(which=which, op=op, day=day):
            if which == "internal":
                d = msg.internal_date.date()
            else:
                d = _sent_date(msg)
                if d is None:
                    return False
            return d < day if op == "before" else d == day if op == "on" else d >= day
        case sk.Size(op=op, n=n):
            return msg.size > n if op == "larger" else msg.size < n
        case sk.ModSeq(n=n):
            return msg.modseq >= n
    raise ValueError(f"unknown search key {key!r}")


def _all_headers(msg: _Message) -> tuple[tuple[str, str], ...]:
    from mailflow import mime

    if msg.parsed is None:
        msg.parsed = mime.to_json(mime.parse(msg.body))
    return mime.from_json(msg.parsed).headers
