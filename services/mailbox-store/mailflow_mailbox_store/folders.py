"""Mailboxes of one user: list, create, delete, rename, subscribe, status (database side).

Every function takes the user id from the session and looks mailboxes up by (user_id, name) or
(user_id, id): another user's mailbox is simply NotFound. Rules (RFC 3501 §6.3):
- INBOX always exists; it cannot be created, deleted or renamed away (renaming it moves its messages
  into the new mailbox and leaves it empty, with its UIDVALIDITY and UIDNEXT unchanged).
- CREATE makes missing parents; DELETE of a mailbox with children empties it and leaves it \\Noselect;
  deleting a \\Noselect mailbox that still has children is Invalid.
- A new mailbox gets a UIDVALIDITY never used before for this user (users.next_uidvalidity only grows),
  so a name deleted and made again never repeats (name, UIDVALIDITY).
"""

from __future__ import annotations

import time

from mailflow.errors import Conflict, Invalid, NotFound
from mailflow.store.api import DELIMITER, DeletedUse, MailboxInfo, MailboxStatus
from mailflow_mailbox_store import names
from mailflow_mailbox_store.db import Tx

MAX_MAILBOXES = 10_000
_MAILBOX = (
    "id, name, special_use, uidvalidity, uidnext, highestmodseq, first_recent_uid, selectable, vanished_floor"
)


class Row:
    """A mailbox row."""

    __slots__ = (
        "id",
        "name",
        "special_use",
        "uidvalidity",
        "uidnext",
        "highestmodseq",
        "first_recent_uid",
        "selectable",
        "vanished_floor",
    )

    def __init__(self, r: tuple):
        (self.id, self.name, self.special_use, self.uidvalidity, self.uidnext, self.highestmodseq,
         self.first_recent_uid, self.selectable, self.vanished_floor) = r  # fmt: skip
        self.selectable = bool(self.selectable)


def by_name(tx: Tx, user_id: int, name: str, selectable: bool = True) -> Row:
    r = tx.one(
        f"SELECT {_MAILBOX} FROM mailboxes WHERE user_id = :u AND name = :n",
        {"u": user_id, "n": names.mailbox(name)},
    )
    if r is None or (selectable and not r[7]):
        raise NotFound(f"no mailbox {name}")
    return Row(r)


def by_id(tx: Tx, user_id: int, mailbox_id: int) -> Row:
    r = tx.one(
        f"SELECT {_MAILBOX} FROM mailboxes WHERE user_id = :u AND id = :m", {"u": user_id, "m": mailbox_id}
    )
    if r is None or not r[7]:
        raise NotFound("no such mailbox")
    return Row(r)


def _new_uidvalidity(tx: Tx, user_id: int) -> int:
    nxt = tx.value("SELECT next_uidvalidity FROM users WHERE id = :u", {"u": user_id})
    if nxt is None:
        raise NotFound("no such user")
    value = max(int(nxt), int(time.time()))
    tx.run("UPDATE users SET next_uidvalidity = :v WHERE id = :u", {"v": value + 1, "u": user_id})
    return value


def _insert(tx: Tx, user_id: int, name: str, special_use: str | None) -> int:
    return tx.value(
        "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity, uidnext, highestmodseq, first_recent_uid,"
        " selectable, created_at) VALUES (:u, :n, :s, :v, 1, 1, 1, :t, :c) RETURNING id",
        {
            "u": user_id,
            "n": name,
            "s": special_use,
            "v": _new_uidvalidity(tx, user_id),
            "t": True,
            "c": int(time.time()),
        },
    )


def create_default_mailboxes(tx: Tx, user_id: int) -> None:
    for name, special_use in names.DEFAULT_MAILBOXES:
        _insert(tx, user_id, name, special_use)
        tx.run("INSERT INTO subscriptions (user_id, name) VALUES (:u, :n)", {"u": user_id, "n": name})


def _all_names(tx: Tx, user_id: int) -> dict[str, tuple]:
    return {r[1]: r for r in tx.all(f"SELECT {_MAILBOX} FROM mailboxes WHERE user_id = :u", {"u": user_id})}


def _has_children(name: str, all_names) -> bool:
    prefix = name + DELIMITER
    return any(n.startswith(prefix) for n in all_names)


def list_mailboxes(tx: Tx, user_id: int) -> list[MailboxInfo]:
    rows = _all_names(tx, user_id)
    subscribed = {r[0] for r in tx.all("SELECT name FROM subscriptions WHERE user_id = :u", {"u": user_id})}
    ordered = sorted(rows, key=lambda n: (n != "INBOX", n))
    children = set()
    for n in rows:
        children.update(names.parents(n))
    return [
        MailboxInfo(
            id=rows[n][0],
            name=n,
            special_use=rows[n][2],
            subscribed=n in subscribed,
            has_children=n in children,
            selectable=bool(rows[n][7]),
        )
        for n in ordered
    ]


def create_mailbox(tx: Tx, user_id: int, name: str, special_use: str | None = None) -> MailboxInfo:
    name = names.mailbox(name)
    if special_use is not None and special_use not in names.SPECIAL_USES:
        raise Invalid(f"unknown special-use attribute {special_use}")
    existing = _all_names(tx, user_id)
    if not existing:
        raise NotFound("no such user")
    if name == "INBOX":
        raise Conflict("INBOX exists")
    row = existing.get(name)
    if row is not None:
        if row[7]:
            raise Conflict(f"mailbox {name} exists")
        # A \Noselect parent made selectable again: a new UIDVALIDITY, as for a new mailbox.
        tx.run(
            "UPDATE mailboxes SET selectable = :t, special_use = :s, uidvalidity = :v WHERE id = :m",
            {"t": True, "s": special_use, "v": _new_uidvalidity(tx, user_id), "m": row[0]},
        )
        return MailboxInfo(
            id=row[0], name=name, special_use=special_use, has_children=_has_children(name, existing)
        )
    if len(existing) + name.count(DELIMITER) + 1 > MAX_MAILBOXES:
        raise Invalid(f"at most {MAX_MAILBOXES} mailboxes")
    for parent in names.parents(name):
        if parent not in existing:
            existing[parent] = (_insert(tx, user_id, parent, None),)
    mailbox_id = _insert(tx, user_id, name, special_use)
    return MailboxInfo(id=mailbox_id, name=name, special_use=special_use, has_children=False)


def special_use(tx: Tx, user_id: int, use: str, name: str) -> tuple[Row, bool]:
    """The user's selectable mailbox with special use `use` (the oldest, if several), else the one
    called `name`, else `name` made with that use: (its row, whether it was made now)."""
    r = tx.one(
        f"SELECT {_MAILBOX} FROM mailboxes WHERE user_id = :u AND special_use = :s AND selectable = :t"
        " ORDER BY id LIMIT 1",
        {"u": user_id, "s": use, "t": True},
    )
    if r is not None:
        return Row(r), False
    try:
        return by_name(tx, user_id, name), False
    except NotFound:
        pass
    create_mailbox(tx, user_id, name, use)
    return by_name(tx, user_id, name), True


def release_bodies(tx: Tx, mailbox_id: int, where: str = "", params: dict | None = None) -> None:
    """Take one body reference off per message selected (call before deleting the message rows)."""
    tx.run(
        "UPDATE blobs SET refs = blobs.refs - d.n FROM (SELECT blob_id, COUNT(*) AS n FROM messages"
        f" WHERE mailbox_id = :m {where} GROUP BY blob_id) AS d WHERE blobs.id = d.blob_id",
        {"m": mailbox_id, **(params or {})},
    )


def drop_mailbox_contents(tx: Tx, mailbox_id: int) -> tuple[int, int]:
    """Delete every message of a mailbox (no tombstones: the mailbox goes or becomes \\Noselect).
    Keeps the owner's usage counters right. Returns (messages, bytes)."""
    count, size = tx.one(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE mailbox_id = :m", {"m": mailbox_id}
    )
    count, size = int(count), int(size)
    if count:
        release_bodies(tx, mailbox_id)
        tx.run("DELETE FROM messages WHERE mailbox_id = :m", {"m": mailbox_id})
        tx.run(
            "UPDATE users SET used_bytes = used_bytes - :b, messages = messages - :n"
            " WHERE id = (SELECT user_id FROM mailboxes WHERE id = :m)",
            {"b": size, "n": count, "m": mailbox_id},
        )
    tx.run("DELETE FROM pending_retrievals WHERE mailbox_id = :m", {"m": mailbox_id})
    return count, size


def delete_mailbox(tx: Tx, user_id: int, name: str) -> int:
    """Returns the id of the mailbox deleted (or emptied and left \\Noselect)."""
    name = names.mailbox(name)
    if name == "INBOX":
        raise Invalid("INBOX cannot be deleted")
    existing = _all_names(tx, user_id)
    row = existing.get(name)
    if row is None:
        raise NotFound(f"no mailbox {name}")
    mailbox_id, selectable = row[0], bool(row[7])
    if _has_children(name, existing):
        if not selectable:
            raise Invalid(f"{name} has children and is \\Noselect already")
        drop_mailbox_contents(tx, mailbox_id)
        tx.run("DELETE FROM expunged WHERE mailbox_id = :m", {"m": mailbox_id})
        tx.run("UPDATE mailboxes SET selectable = :f WHERE id = :m", {"f": False, "m": mailbox_id})
        return mailbox_id
    drop_mailbox_contents(tx, mailbox_id)
    tx.run("DELETE FROM expunged WHERE mailbox_id = :m", {"m": mailbox_id})
    tx.run("DELETE FROM mailboxes WHERE id = :m", {"m": mailbox_id})
    return mailbox_id


def rename_mailbox(tx: Tx, user_id: int, old: str, new: str) -> list[tuple[int, str]]:
    """Rename a mailbox and its children. Returns (id, new name) of every mailbox renamed.
    INBOX is handled by the caller (it is a move of its messages, see messages.rename_inbox)."""
    old, new = names.mailbox(old), names.mailbox(new)
    existing = _all_names(tx, user_id)
    if old not in existing:
        raise NotFound(f"no mailbox {old}")
    if new == old or new.startswith(old + DELIMITER):
        raise Invalid("cannot rename a mailbox into itself")
    if new in existing:
        raise Conflict(f"mailbox {new} exists")
    moves = [(old, new)]
    prefix = old + DELIMITER
    moves += [(n, new + n[len(old) :]) for n in existing if n.startswith(prefix)]
    for _, target in moves:
        if target in existing:
            raise Conflict(f"mailbox {target} exists")
    for parent in names.parents(new):
        if parent not in existing:
            existing[parent] = (_insert(tx, user_id, parent, None),)
    out = []
    for src, dst in moves:
        tx.run("UPDATE mailboxes SET name = :d WHERE id = :m", {"d": dst, "m": existing[src][0]})
        tx.run(
            "UPDATE subscriptions SET name = :d WHERE user_id = :u AND name = :s",
            {"d": dst, "u": user_id, "s": src},
        )
        out.append((existing[src][0], dst))
    return out


def subscribe(tx: Tx, user_id: int, name: str, subscribed: bool) -> None:
    name = names.mailbox(name)
    p = {"u": user_id, "n": name}
    if not subscribed:
        tx.run("DELETE FROM subscriptions WHERE user_id = :u AND name = :n", p)
        return
    if tx.one("SELECT 1 FROM mailboxes WHERE user_id = :u AND name = :n", p) is None:
        raise NotFound(f"no mailbox {name}")
    if tx.one("SELECT 1 FROM subscriptions WHERE user_id = :u AND name = :n", p) is None:
        tx.run("INSERT INTO subscriptions (user_id, name) VALUES (:u, :n)", p)


def subscriptions(tx: Tx, user_id: int) -> list[str]:
    """Every name the user subscribed to, sorted: a subscription outlives its mailbox (RFC 3501 §6.3.6)."""
    return sorted(r[0] for r in tx.all("SELECT name FROM subscriptions WHERE user_id = :u", {"u": user_id}))


def status_of(tx: Tx, row: Row, cache=None, user_id: int = 0) -> MailboxStatus:
    """The mailbox's counts: from a listing cached for exactly this state, else one aggregate scan."""
    if cache is not None:
        lst = cache.get((user_id, row.id, row.uidvalidity, row.uidnext, row.highestmodseq))
        if lst is not None:
            return lst.status(row.first_recent_uid, row.name)
    count, size, unseen, recent = tx.one(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN (flags & 1) = 0 THEN 1 ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN uid >= :r THEN 1 ELSE 0 END), 0) FROM messages WHERE mailbox_id = :m",
        {"m": row.id, "r": row.first_recent_uid},
    )
    count, size, unseen, recent = int(count), int(size), int(unseen), int(recent)  # PostgreSQL SUM: numeric
    return MailboxStatus(
        id=row.id,
        name=row.name,
        uidvalidity=row.uidvalidity,
        uidnext=row.uidnext,
        messages=count,
        unseen=unseen,
        recent=recent,
        highestmodseq=row.highestmodseq,
        size=size,
    )


def deleted_use(tx: Tx, user_id: int, name: str) -> DeletedUse:
    """How many messages of the mailbox are flagged \\Deleted, and their octets (one aggregate scan)."""
    row = by_name(tx, user_id, name)
    count, size = tx.one(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE mailbox_id = :m AND (flags & :d) <> 0",
        {"m": row.id, "d": names.DELETED_BIT},
    )
    return DeletedUse(messages=int(count), size=int(size))


def status(tx: Tx, user_id: int, name: str, cache=None) -> MailboxStatus:
    return status_of(tx, by_name(tx, user_id, name), cache, user_id)
