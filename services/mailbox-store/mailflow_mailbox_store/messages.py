"""Messages of one user's mailbox: select, changes, fetch, flags, expunge, copy, move, append, POP3 lock.

Database side only. Every function starts from folders.by_id/by_name with the session's user id, so
a mailbox (and therefore a UID) of another user is NotFound. Each change takes the mailbox's next
MODSEQ (storage.py); expunged UIDs leave tombstones with that MODSEQ, which is what changes() and
QRESYNC VANISHED read (vanished_since). Maintenance prunes old tombstones (maintenance.purge_tombstones)
and raises the mailbox's vanished_floor past them: a question about an earlier MODSEQ gets the
tombstones that are left and `complete=False`, and the caller answers from the UIDs still present. Readers (select, changes, fetch_*) run in one snapshot; writers run in the
group-commit writer. Quota: COPY and APPEND are refused past the quota (QuotaExceeded); MOVE is not
(it adds nothing).
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from dataclasses import dataclass

from mailflow.errors import Conflict, Invalid, NotFound
from mailflow.store.api import CopyResult, MailboxStatus
from mailflow_mailbox_store import folders, keywords, metrics, names
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.listings import KEYWORD_SHIFT, Listing, ListingCache, build, key_of, refresh
from mailflow_mailbox_store.names import DELETED_BIT
from mailflow_mailbox_store.parsing import Prepared
from mailflow_mailbox_store.storage import (
    INSERT_MESSAGE,
    INSERT_PENDING,
    Change,
    Usage,
    allocate,
    next_modseq,
    reference_blobs,
)
from mailflow_mailbox_store.uidset import UidSet

_META = f"uid, flags + keywords * {1 << KEYWORD_SHIFT}, modseq, size, internal_date, blob_id"
_LOW = (1 << KEYWORD_SHIFT) - 1


@dataclass
class Metas:
    """Messages' UID, flags, MODSEQ, size, internal date and body id (EMAILID), kept as rows and sent as
    columns: {"u": uids, "f": index into "fs" (the distinct flag sets), "m": modseqs, "z": sizes, "d": dates,
    "e": body ids}."""

    rows: list  # (uid, flags + keywords * 32, modseq, size, internal_date, blob_id)
    kws: keywords.Keywords

    def to_obj(self) -> dict:
        if not self.rows:
            return {"u": [], "f": [], "fs": [], "m": [], "z": [], "d": [], "e": []}
        uids, combined, modseqs, sizes, dates, bodies = zip(*self.rows, strict=True)
        position: dict[int, int] = {}
        index = [position.setdefault(c, len(position)) for c in combined]
        sets = [sorted(self.kws.flags(c & _LOW, c >> KEYWORD_SHIFT)) for c in position]
        return {"u": uids, "f": index, "fs": sets, "m": modseqs, "z": sizes, "d": dates, "e": bodies}


@dataclass
class ChangeSet:
    status: MailboxStatus
    updated: Metas
    expunged: list[int]
    complete: bool = True  # False: tombstones after `since` were pruned, `expunged` may lack some


def vanished_since(tx: Tx, row: folders.Row, since: int) -> tuple[list[int], bool]:
    """UIDs expunged from the mailbox after MODSEQ `since`, ascending, and whether that list is complete:
    False when tombstones above `since` may have been pruned (since < vanished_floor)."""
    if since >= row.highestmodseq:
        return [], True
    gone = tx.all(
        "SELECT uid FROM expunged WHERE mailbox_id = :m AND modseq > :s ORDER BY uid",
        {"m": row.id, "s": since},
    )
    return [r[0] for r in gone], since >= row.vanished_floor


def selection(
    tx: Tx, user_id: int, name: str, cache: ListingCache | None, vanished: int | None
) -> tuple[Listing, folders.Row, bool, tuple[list[int], bool] | None]:
    """listing(), plus vanished_since(`vanished`) when asked (QRESYNC SELECT), read in the same snapshot."""
    lst, row, full = listing(tx, user_id, name, cache)
    return lst, row, full, (None if vanished is None else vanished_since(tx, row, vanished))


def listing(
    tx: Tx, user_id: int, name: str, cache: ListingCache | None = None
) -> tuple[Listing, folders.Row, bool]:
    """(the listing, the mailbox row it was checked against, whether the user's keywords are full)."""
    row = folders.by_name(tx, user_id, name)
    key = key_of(user_id, row.id, row.uidvalidity, row.uidnext, row.highestmodseq)
    kws = keywords.load(tx, user_id)
    lst = cache.get(key) if cache is not None else None
    how = "kept"
    if lst is None and cache is not None:
        lst, how = _refreshed(tx, cache, row, key, kws), "refreshed"
    if lst is None:
        how = "scanned"
        rows = tx.all(
            f"SELECT uid, flags + keywords * {1 << KEYWORD_SHIFT}, modseq FROM messages WHERE mailbox_id = :m ORDER BY uid",
            {"m": row.id},
        )
        size = tx.value("SELECT COALESCE(SUM(size), 0) FROM messages WHERE mailbox_id = :m", {"m": row.id})
        lst = build(key, rows, int(size), kws)
        if cache is not None:
            cache.put(lst)
    metrics.LISTINGS.labels(how).inc()
    return lst, row, kws.full


def _refreshed(tx: Tx, cache: ListingCache, row: folders.Row, key: tuple, kws) -> Listing | None:
    """The cached listing of an earlier state brought up to date with what changed since (or None)."""
    old = cache.latest(row.id)
    if old is None or old.key[:3] != key[:3] or old.highestmodseq > row.highestmodseq:
        return None
    if old.highestmodseq < row.vanished_floor:  # tombstones since then may be pruned: scan afresh
        return None
    p = {"m": row.id, "s": old.highestmodseq}
    changed = tx.all(
        f"SELECT uid, flags + keywords * {1 << KEYWORD_SHIFT}, modseq, size FROM messages"
        " WHERE mailbox_id = :m AND modseq > :s ORDER BY uid",
        p,
    )
    gone = [r[0] for r in tx.all("SELECT uid FROM expunged WHERE mailbox_id = :m AND modseq > :s", p)]
    size = None
    if gone:
        size = int(
            tx.value("SELECT COALESCE(SUM(size), 0) FROM messages WHERE mailbox_id = :m", {"m": row.id})
        )
    lst = refresh(old, key, changed, gone, size, kws)
    if lst is not None:
        cache.put(lst)
    return lst


def claim_recent(tx: Tx, user_id: int, mailbox_id: int, upto: int, claim: bool = True) -> int | None:
    """\\Recent (RFC 3501 §2.3.2): the mailbox's mark is the first UID no session has been told of yet.
    With `claim`, move the mark up to `upto` and return where it stood: the messages from there to
    `upto` are \\Recent for the caller and for no one else (None: another session was first). The row
    is read FOR UPDATE on PostgreSQL (SQLite's writer is alone), so two sessions on two imap-pop3 or
    store processes never both get a message. Without `claim` (EXAMINE) the mark is only read."""
    lock = " FOR UPDATE" if tx.postgres and claim else ""
    mark = tx.value(
        "SELECT first_recent_uid FROM mailboxes WHERE id = :m AND user_id = :u" + lock,
        {"m": mailbox_id, "u": user_id},
    )
    if mark is None:
        raise NotFound("no such mailbox")
    if not claim:
        return int(mark)
    if mark >= upto:
        return None
    tx.run("UPDATE mailboxes SET first_recent_uid = :upto WHERE id = :m", {"upto": upto, "m": mailbox_id})
    return int(mark)


def changes(
    tx: Tx, user_id: int, mailbox_id: int, since: int, cache: ListingCache | None = None
) -> ChangeSet:
    row = folders.by_id(tx, user_id, mailbox_id)
    status = folders.status_of(tx, row, cache, user_id)
    kws = keywords.load(tx, user_id)
    if since >= row.highestmodseq:
        return ChangeSet(status, Metas([], kws), [])
    rows = tx.all(
        f"SELECT {_META} FROM messages WHERE mailbox_id = :m AND modseq > :s ORDER BY uid",
        {"m": mailbox_id, "s": since},
    )
    gone, complete = vanished_since(tx, row, since)
    return ChangeSet(status, Metas(rows, kws), gone, complete)


def fetch_meta(tx: Tx, user_id: int, mailbox_id: int, uids: UidSet) -> Metas:
    folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql()
    rows = tx.all(
        f"SELECT {_META} FROM messages WHERE mailbox_id = :m{clause} ORDER BY uid",
        {"m": mailbox_id, **params},
    )
    return Metas(uids.filter(rows), keywords.load(tx, user_id))


def save_dates(tx: Tx, user_id: int, mailbox_id: int, uids: UidSet) -> list[tuple[int, int | None]]:
    """(uid, saved_at) of the messages named, by UID: RFC 8514 FETCH SAVEDATE (None: saved before the
    store kept save dates, NIL)."""
    folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql()
    sql = f"SELECT uid, saved_at FROM messages WHERE mailbox_id = :m{clause} ORDER BY uid"
    rows = tx.all(sql, {"m": mailbox_id, **params})
    return [(r[0], r[1]) for r in uids.filter(rows)]


def fetch_parsed(tx: Tx, user_id: int, mailbox_id: int, uids: UidSet) -> list[tuple[int, bytes]]:
    folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql("m.uid")
    rows = tx.all(
        f"SELECT m.uid, b.parsed FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :m{clause}"
        " ORDER BY m.uid",
        {"m": mailbox_id, **params},
    )
    return uids.filter(rows)


def body_locators(
    tx: Tx, user_id: int, mailbox_id: int, uids: UidSet
) -> tuple[list[tuple[int, str, int]], list]:
    """[(uid, locator, size)] in UID order, and the (uid, queue_id, trace_id) never fetched before."""
    folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql("m.uid")
    rows = tx.all(
        f"SELECT m.uid, b.locator, b.size FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :m{clause}"
        " ORDER BY m.uid",
        {"m": mailbox_id, **params},
    )
    clause, params = uids.sql("uid")
    pending = tx.all(
        f"SELECT uid, queue_id, trace_id FROM pending_retrievals WHERE mailbox_id = :m{clause}",
        {"m": mailbox_id, **params},
    )
    return uids.filter(rows), uids.filter(pending)


def section_sources(
    tx: Tx, user_id: int, mailbox_id: int, uids: UidSet
) -> tuple[list[tuple[int, str, bytes, int]], list]:
    """[(uid, locator, stored parse, size)] in UID order, and the never-fetched ones (see body_locators)."""
    folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql("m.uid")
    rows = tx.all(
        "SELECT m.uid, b.locator, b.parsed, b.size FROM messages m JOIN blobs b ON b.id = m.blob_id"
        f" WHERE m.mailbox_id = :m{clause} ORDER BY m.uid",
        {"m": mailbox_id, **params},
    )
    clause, params = uids.sql("uid")
    pending = tx.all(
        f"SELECT uid, queue_id, trace_id FROM pending_retrievals WHERE mailbox_id = :m{clause}",
        {"m": mailbox_id, **params},
    )
    return uids.filter(rows), uids.filter(pending)


def mark_retrieved(tx: Tx, mailbox_id: int, uids: list[int]) -> list[int]:
    """Forget the pending retrievals; returns the UIDs this call removed (only those get a trace record)."""
    done = []
    for uid in uids:
        tx.run(
            "DELETE FROM pending_retrievals WHERE mailbox_id = :m AND uid = :u", {"m": mailbox_id, "u": uid}
        )
        if tx.rowcount == 1:
            done.append(uid)
    return done


def store_flags(
    tx: Tx,
    user_id: int,
    mailbox_id: int,
    uids: UidSet,
    op: str,
    flags: list[str],
    unchanged_since: int | None,
) -> tuple[Metas, list[int], list[Change]]:
    """(the messages after the change, the UIDs refused by UNCHANGEDSINCE, events). Set-based: one
    UPDATE changes every message that needs it (all of them get the operation's one new MODSEQ)."""
    row = folders.by_id(tx, user_id, mailbox_id)
    bits, kw_names = names.split_flags(flags)
    kws = keywords.ensure(tx, user_id, kw_names) if op != "remove" else keywords.load(tx, user_id)
    mask = kws.mask(kw_names)
    if op == "add":
        new_f, new_k = f"(flags | {bits})", "(keywords | :km)"
    elif op == "remove":
        new_f, new_k = f"(flags & {_LOW & ~bits})", "(keywords & :km)"
        mask = ~mask
    elif op == "replace":
        new_f, new_k = str(bits), ":km"
    else:
        raise Invalid(f"unknown flag operation {op}")
    clause, params = uids.sql()
    p = {"m": mailbox_id, "km": mask, "us": unchanged_since, **params}
    modified: list[int] = []
    guard = ""
    if unchanged_since is not None:
        guard = " AND modseq <= :us"
        found = tx.all(
            f"SELECT uid FROM messages WHERE mailbox_id = :m{clause} AND modseq > :us ORDER BY uid", p
        )
        modified = [r[0] for r in uids.filter(found)]
    where = f"mailbox_id = :m{clause}{guard} AND ({new_f} != flags OR {new_k} != keywords)"
    if uids.exact_in_sql:
        todo = tx.value(f"SELECT COUNT(*) FROM messages WHERE {where}", p)
    else:
        todo = [r[0] for r in uids.filter(tx.all(f"SELECT uid FROM messages WHERE {where}", p))]
    events = []
    if todo:
        modseq = next_modseq(tx, mailbox_id)
        assignments = f"flags = {new_f}, keywords = {new_k}, modseq = :s"
        if uids.exact_in_sql:
            changed = [
                r[0]
                for r in tx.all(
                    f"UPDATE messages SET {assignments} WHERE {where} RETURNING uid", {**p, "s": modseq}
                )
            ]
        else:
            changed = todo
            tx.many(
                f"UPDATE messages SET {assignments} WHERE mailbox_id = :m AND uid = :u",
                [{"m": mailbox_id, "km": mask, "s": modseq, "u": u} for u in changed],
            )
        changed.sort()
        events.append(Change(user_id, mailbox_id, row.name, "flags", changed, modseq))
    rows = uids.filter(tx.all(f"SELECT {_META} FROM messages WHERE mailbox_id = :m{clause} ORDER BY uid", p))
    if modified:
        refused = set(modified)
        rows = [r for r in rows if r[0] not in refused]
    return Metas(rows, kws), modified, events


def _remove(tx: Tx, user_id: int, row: folders.Row, uids: list[int], sizes: int, release: bool) -> Change:
    """Delete these messages, leave tombstones, keep counters. release: drop body references too."""
    modseq = next_modseq(tx, row.id)
    for i in range(0, len(uids), 500):
        chunk = uids[i : i + 500]
        clause, params = UidSet.of(chunk).sql()
        if release:
            folders.release_bodies(tx, row.id, clause, params)
        tx.run(f"DELETE FROM messages WHERE mailbox_id = :m{clause}", {"m": row.id, **params})
        tx.run(f"DELETE FROM pending_retrievals WHERE mailbox_id = :m{clause}", {"m": row.id, **params})
    tx.insert(
        "INSERT INTO expunged (mailbox_id, modseq, uid)",
        ("int4", "int8", "int8"),
        [(row.id, modseq, u) for u in uids],
    )
    if release:
        tx.run(
            "UPDATE users SET used_bytes = used_bytes - :b, messages = messages - :n WHERE id = :u",
            {"b": sizes, "n": len(uids), "u": user_id},
        )
    return Change(user_id, row.id, row.name, "expunged", uids, modseq)


def expunge(tx: Tx, user_id: int, mailbox_id: int, uids: UidSet | None) -> tuple[list[int], list[Change]]:
    row = folders.by_id(tx, user_id, mailbox_id)
    clause, params = uids.sql() if uids is not None else ("", {})
    rows = tx.all(
        f"SELECT uid, size FROM messages WHERE mailbox_id = :m AND (flags & {DELETED_BIT}) != 0{clause} ORDER BY uid",
        {"m": mailbox_id, **params},
    )
    if uids is not None:
        rows = uids.filter(rows)
    if not rows:
        return [], []
    gone = [r[0] for r in rows]
    return gone, [_remove(tx, user_id, row, gone, sum(r[1] for r in rows), release=True)]


def copy(
    tx: Tx, user_id: int, mailbox_id: int, uids: UidSet, dest: str, move: bool = False
) -> tuple[CopyResult, list[Change]]:
    src = folders.by_id(tx, user_id, mailbox_id)
    dst = folders.by_name(tx, user_id, dest)
    clause, params = uids.sql()
    rows = uids.filter(
        tx.all(
            f"SELECT uid, flags, keywords, size, internal_date, blob_id, queue_id FROM messages WHERE mailbox_id = :m{clause}"
            " ORDER BY uid",
            {"m": mailbox_id, **params},
        )
    )
    if not rows:
        return CopyResult(uidvalidity=dst.uidvalidity, source_uids=[], dest_uids=[]), []
    total = sum(r[3] for r in rows)
    if not move:
        usage = Usage(tx)
        usage.check(user_id, total)
    first, modseq = allocate(tx, dst.id, len(rows))
    new_uids = list(range(first, first + len(rows)))
    now = int(time.time())
    tx.insert(
        *INSERT_MESSAGE,
        [
            (dst.id, nu, modseq, f, k, z, d, b, q, now)
            for nu, (_, f, k, z, d, b, q) in zip(new_uids, rows, strict=True)
        ],
    )
    changes = [Change(user_id, dst.id, dst.name, "appended", new_uids, modseq)]
    old_uids = [r[0] for r in rows]
    if move:
        _move_pending(tx, src.id, dst.id, dict(zip(old_uids, new_uids, strict=True)))
        changes.insert(0, _remove(tx, user_id, src, old_uids, total, release=False))
    else:
        per_blob: dict[int, int] = defaultdict(int)
        for r in rows:
            per_blob[r[5]] += 1
        tx.many(
            "UPDATE blobs SET refs = refs + :n WHERE id = :b", [{"n": n, "b": b} for b, n in per_blob.items()]
        )
        tx.run(
            "UPDATE users SET used_bytes = used_bytes + :b, messages = messages + :n WHERE id = :u",
            {"b": total, "n": len(rows), "u": user_id},
        )
    return CopyResult(uidvalidity=dst.uidvalidity, source_uids=old_uids, dest_uids=new_uids), changes


def training(
    tx: Tx, user_id: int, src_id: int, dest: str, uids: list[int]
) -> tuple[bool | None, list[tuple[str, int]]]:
    """What copying from mailbox `src_id` into `dest` teaches the spam filter (learning.py): True (into
    \\Junk: spam), False (out of \\Junk, not into \\Trash: ham) or None; and the (locator, size) of
    the bodies of the copies, `uids` in `dest` (none when it teaches nothing)."""
    src, dst = folders.by_id(tx, user_id, src_id), folders.by_name(tx, user_id, dest)
    if dst.special_use == "\\Junk" and src.special_use != "\\Junk":
        spam = True
    elif src.special_use == "\\Junk" and dst.special_use not in ("\\Junk", "\\Trash"):
        spam = False
    else:
        return None, []
    clause, params = UidSet.of(uids).sql("m.uid")
    rows = tx.all(
        f"SELECT b.locator, b.size FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = :m{clause}",
        {"m": dst.id, **params},
    )
    return spam, [(r[0], r[1]) for r in rows]


def _move_pending(tx: Tx, src: int, dst: int, mapping: dict[int, int]) -> None:
    clause, params = UidSet.of(mapping).sql()
    rows = tx.all(
        f"SELECT uid, queue_id, trace_id FROM pending_retrievals WHERE mailbox_id = :m{clause}",
        {"m": src, **params},
    )
    tx.insert(
        *INSERT_PENDING,
        [(dst, mapping[u], q, t) for u, q, t in rows if u in mapping],
    )


def append(
    tx: Tx, user_id: int, name: str, items: list[tuple[Prepared, list[str], int]]
) -> tuple[tuple[int, list[int]], list[Change]]:
    """APPEND and MULTIAPPEND (RFC 3502): every (body, flags, internal date) into one mailbox, in order,
    with consecutive UIDs, or none of them (the caller's operation fails whole)."""
    row = folders.by_name(tx, user_id, name)
    split = [names.split_flags(flags) for _, flags, _ in items]
    usage = Usage(tx)
    for body, _, _ in items:
        usage.charge(user_id, body.size)
    kws = keywords.ensure(tx, user_id, sorted({k for _, kw_names in split for k in kw_names}))
    refs: dict[bytes, tuple[Prepared, int]] = {}
    for body, _, _ in items:
        refs[body.sha] = (body, refs.get(body.sha, (body, 0))[1] + 1)
    blob_ids = reference_blobs(tx, refs)
    first, modseq = allocate(tx, row.id, len(items))
    rows, flags_now = [], []
    now = int(time.time())
    for n, ((body, _, when), (bits, kw_names)) in enumerate(zip(items, split, strict=True)):
        kw = kws.mask(kw_names)
        rows.append((row.id, first + n, modseq, bits, kw, body.size, when, blob_ids[body.sha], None, now))
        flags_now.append(sorted(kws.flags(bits, kw)))
    tx.insert(*INSERT_MESSAGE, rows)
    usage.flush()
    uids = [first + n for n in range(len(items))]
    return (row.uidvalidity, uids), [Change(user_id, row.id, row.name, "appended", uids, modseq, flags_now, modseq - 1)]


def rename_inbox(tx: Tx, user_id: int, new: str) -> list[Change]:
    """RFC 3501 §6.3.5: RENAME INBOX moves its messages into a new mailbox; INBOX stays, empty."""
    info = folders.create_mailbox(tx, user_id, new)
    inbox = folders.by_name(tx, user_id, "INBOX")
    changes = [Change(user_id, info.id, info.name, "mailbox_created")]
    rows = tx.all("SELECT uid FROM messages WHERE mailbox_id = :m", {"m": inbox.id})
    if rows:
        _, moved = copy(tx, user_id, inbox.id, UidSet.of([r[0] for r in rows]), info.name, move=True)
        changes += moved
    return changes


def pop3_lock(tx: Tx, user_id: int, holder: str, ttl: int) -> str:
    now = int(time.time())
    row = tx.one("SELECT token, holder, expires_at FROM pop3_locks WHERE user_id = :u", {"u": user_id})
    if row is not None and row[2] >= now and row[1] != holder:
        raise Conflict("maildrop is locked by another POP3 session")
    token = row[0] if row is not None and row[1] == holder else secrets.token_hex(16)
    tx.run("DELETE FROM pop3_locks WHERE user_id = :u", {"u": user_id})
    tx.run(
        "INSERT INTO pop3_locks (user_id, token, holder, expires_at) VALUES (:u, :t, :h, :e)",
        {"u": user_id, "t": token, "h": holder, "e": now + ttl},
    )
    return token


def pop3_unlock(tx: Tx, user_id: int, token: str) -> None:
    tx.run("DELETE FROM pop3_locks WHERE user_id = :u AND token = :t", {"u": user_id, "t": token})
