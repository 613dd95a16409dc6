"""Delivery: a batch of DeliverItems into users' mailboxes, in one write operation (database side).

Per item and per user the recipient resolves to (aliases can give several):
  1. the key (item.key, user) was stored before -> "duplicate" for that user (nothing stored again);
  2. the user's quota would be exceeded -> "quota_exceeded" (permanent if the message alone is larger
     than the quota); the users that did get it keep it, and a retry of the item is a duplicate for them;
  3. otherwise the message goes to item.mailbox (INBOX if that mailbox does not exist, unless the item
     says `create`: then it is made, in the same transaction, and INBOX only if its name is invalid or
     the user is at the mailbox limit); an item marked
     `junk` (DMARC p=quarantine) goes to the user's \\Junk mailbox instead, which is made as "Junk"
     (with \\Junk) when the user has none (folders.special_use), in the same transaction.
An item's result: "quota_exceeded" if any user refused it, else "stored" if any user got it now, else
"duplicate". "unknown_user" items never reach this module. The whole batch commits together; when the
writer reports success, every stored message is durable (body fsynced before COMMIT).
Rows are locked users first (by id), then bodies (by SHA-256), then mailboxes (by id), so two store
processes delivering to the same users on one PostgreSQL wait for each other instead of deadlocking
(a group that still loses a deadlock, with an APPEND in it say, is run again: db.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded
from mailflow.store.api import SpecialUse
from mailflow_mailbox_store import folders, keywords, names
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.parsing import Prepared
from mailflow_mailbox_store.storage import (
    INSERT_MESSAGE,
    INSERT_PENDING,
    Change,
    Usage,
    allocate,
    reference_blobs,
)

JUNK: SpecialUse = "\\Junk"


@dataclass
class Item:
    index: int
    key: str
    users: dict[str, int]  # login -> user id
    body: Prepared
    mailbox: str
    flag_bits: int
    keywords: list[str]
    internal_date: int
    queue_id: str
    trace_id: str
    junk: bool = False  # into the user's \Junk mailbox, not `mailbox`
    create: bool = False  # make `mailbox` when the user has none of that name


@dataclass
class Outcome:
    index: int
    status: str  # stored, duplicate, quota_exceeded
    users: list[str] = field(default_factory=list)  # who got it now or before
    permanent: bool = False
    detail: str = ""
    stored: list[tuple[str, str, int]] = field(default_factory=list)  # (login, mailbox, uid) stored now


@dataclass
class Placed:
    item: Item
    user_id: int
    login: str
    mailbox_id: int
    mailbox: str
    uid: int = 0


def _mailbox_for(tx: Tx, cache: dict, user_id: int, item: Item, made: list[Change]) -> tuple[int, str]:
    key = (user_id, JUNK if item.junk else item.mailbox, item.create and not item.junk)
    hit = cache.get(key)
    if hit is None:
        if item.junk:
            row, new = folders.special_use(tx, user_id, JUNK, "Junk")
            if new:
                made.append(Change(user_id, row.id, row.name, "mailbox_created"))
        else:
            try:
                row = folders.by_name(tx, user_id, item.mailbox)
            except NotFound:
                row = _made(tx, user_id, item.mailbox, made) if item.create else None
            except Invalid:
                row = None
            if row is None:
                row = folders.by_name(tx, user_id, "INBOX")
        hit = cache[key] = (row.id, row.name)
    return hit


def _made(tx: Tx, user_id: int, name: str, made: list[Change]) -> folders.Row | None:
    """The mailbox `name` made now (it was missing), or None when it cannot be (a bad name, the limit,
    a \\Noselect name): the message then goes to INBOX."""
    try:
        info = folders.create_mailbox(tx, user_id, name)
    except (Invalid, Conflict, NotFound):
        return None
    made.append(Change(user_id, info.id, info.name, "mailbox_created"))
    return folders.by_name(tx, user_id, info.name)


def deliver(tx: Tx, items: list[Item], now: int) -> tuple[list[Outcome], list[Change]]:
    usage = Usage(tx)
    usage.load(list({user_id for item in items for user_id in item.users.values()}))
    mailboxes: dict = {}
    outcomes: list[Outcome] = []
    placed: list[Placed] = []
    keys: list[dict] = []
    batch_keys = _known_keys(tx, items)  # grows as this batch stores: a key twice in one batch is stored once
    made: list[Change] = []  # mailboxes made for junk
    for item in items:
        out = Outcome(item.index, "duplicate")
        refused: list[QuotaExceeded] = []
        for login, user_id in item.users.items():
            if (user_id, item.key) in batch_keys:
                out.users.append(login)
                continue
            try:
                usage.charge(user_id, item.body.size)
            except QuotaExceeded as exc:
                refused.append(exc)
                continue
            mailbox_id, mailbox = _mailbox_for(tx, mailboxes, user_id, item, made)
            placed.append(Placed(item, user_id, login, mailbox_id, mailbox))
            keys.append({"u": user_id, "k": item.key, "c": now})
            batch_keys.add((user_id, item.key))
            out.users.append(login)
            out.status = "stored"
        if refused:
            out.status = "quota_exceeded"
            out.permanent = all(e.permanent for e in refused)
            out.detail = str(refused[0])
        outcomes.append(out)

    changes = made + _insert(tx, placed, now)
    usage.flush()
    tx.insert(
        "INSERT INTO delivery_keys (user_id, ikey, created_at)",
        ("int4", "text", "int8"),
        [(k["u"], k["k"], k["c"]) for k in keys],
    )
    by_index = {o.index: o for o in outcomes}
    for p in placed:
        by_index[p.item.index].stored.append((p.login, p.mailbox, p.uid))
    return outcomes, changes


def merge(args_list: list[tuple]) -> tuple[tuple, object]:
    """Several deliver() calls of one group commit as one: (merged arguments, a function splitting
    the merged result back, one part per call). Events all go with the first part (published once)."""
    merged: list[Item] = []
    spans = []
    for items, _now in args_list:
        start = len(merged)
        merged += [replace(it, index=start + k) for k, it in enumerate(items)]
        spans.append((start, items))

    def split(result):
        outcomes, changes = result
        parts = []
        for n, (start, items) in enumerate(spans):
            mine = [o for o in outcomes if start <= o.index < start + len(items)]
            for o in mine:
                o.index = items[o.index - start].index
            parts.append((mine, changes if n == 0 else []))
        return parts

    return (merged, args_list[0][1]), split


deliver.merge = merge  # type: ignore[attr-defined]


def _known_keys(tx: Tx, items: list[Item]) -> set[tuple[int, str]]:
    """(user_id, key) pairs stored before, looked up per user in chunks (the primary key's order)."""
    by_user: dict[int, set[str]] = defaultdict(set)
    for item in items:
        for user_id in item.users.values():
            by_user[user_id].add(item.key)
    known: set[tuple[int, str]] = set()
    for user_id, wanted in by_user.items():
        keys = sorted(wanted)
        for i in range(0, len(keys), 500):
            clause, params = tx.among("ikey", "k", keys[i : i + 500], "text")
            rows = tx.all(
                f"SELECT ikey FROM delivery_keys WHERE user_id = :u AND {clause}", {"u": user_id, **params}
            )
            known.update((user_id, r[0]) for r in rows)
    return known


NO_KEYWORDS = keywords.Keywords(())  # names the system flags of items that carry no keyword


def _insert(tx: Tx, placed: list[Placed], saved_at: int) -> list[Change]:
    by_mailbox: dict[int, list[Placed]] = defaultdict(list)
    for p in placed:
        by_mailbox[p.mailbox_id].append(p)
    refs: dict[bytes, list] = {}
    for p in placed:
        refs.setdefault(p.item.body.sha, [p.item.body, 0])[1] += 1
    blob_ids = reference_blobs(tx, {sha: (body, n) for sha, (body, n) in refs.items()}) if refs else {}
    kw_cache: dict[int, keywords.Keywords] = {}
    rows, pending, changes = [], [], []
    for mailbox_id, group in sorted(by_mailbox.items()):  # mailbox rows locked in id order (as users)
        first, modseq = allocate(tx, mailbox_id, len(group))
        flag_lists = []
        for i, p in enumerate(group):
            p.uid = first + i
            kw, kws = 0, NO_KEYWORDS
            if p.item.keywords:
                kws = kw_cache.get(p.user_id)
                if kws is None or any(k.lower() not in kws.by_lower for k in p.item.keywords):
                    # the user's first item in this group, or one with a keyword the group has not added yet
                    kws = kw_cache[p.user_id] = keywords.ensure(tx, p.user_id, p.item.keywords)
                kw = kws.mask(p.item.keywords)
            flag_lists.append(sorted(kws.flags(p.item.flag_bits, kw)))
            item = p.item
            rows.append(
                (mailbox_id, p.uid, modseq, item.flag_bits, kw, item.body.size, item.internal_date,
                 blob_ids[item.body.sha], item.queue_id or None, saved_at)
            )  # fmt: skip
            if item.queue_id:
                pending.append((mailbox_id, p.uid, item.queue_id, item.trace_id))
        changes.append(
            Change(group[0].user_id, mailbox_id, group[0].mailbox, "appended", [p.uid for p in group], modseq,
                   flag_lists, modseq - 1)
        )  # fmt: skip
    tx.insert(*INSERT_MESSAGE, rows)
    tx.insert(*INSERT_PENDING, pending)
    return changes


def item_flags(flags) -> tuple[int, list[str]]:
    try:
        return names.split_flags(flags)
    except Invalid:
        return 0, []
