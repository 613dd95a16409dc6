"""The one way messages enter a mailbox: UIDs and MODSEQs handed out, bodies referenced, usage counted.

UIDs come from `UPDATE mailboxes SET uidnext = uidnext + n ... RETURNING`, which locks the mailbox
row until COMMIT: two transactions (or two store processes on PostgreSQL) can never get the same
UIDs, and uidnext never goes back, so a UID is never reused. Every change of a mailbox takes the next
MODSEQ the same way. All messages changed by one operation share its MODSEQ (RFC 7162 allows it).
Quota: `charge` refuses a message that would take the user past its quota; permanently when the
message alone is larger than the whole quota (it can never fit), temporarily otherwise. On PostgreSQL
the user's row is read FOR UPDATE, so the check of another store process waits for this transaction's
usage instead of passing on the same old figure (SQLite has a single writer: nothing to wait for).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailflow.errors import QuotaExceeded, ServiceUnavailable
from mailflow_mailbox_store import sortkeys
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.parsing import Prepared


@dataclass
class Change:
    """What the async side turns into a MailboxEvent after COMMIT."""

    user_id: int
    mailbox_id: int
    mailbox: str
    kind: str
    uids: list[int] = field(default_factory=list)
    modseq: int = 0
    flags: list[list[str]] | None = None  # "appended": each new message's flags, in `uids` order
    since: int = 0  # "appended": HIGHESTMODSEQ before the change (allocate() adds one)


def allocate(tx: Tx, mailbox_id: int, n: int) -> tuple[int, int]:
    """Reserve n UIDs and one MODSEQ: (first uid, modseq)."""
    uidnext, modseq = tx.one(
        "UPDATE mailboxes SET uidnext = uidnext + :n, highestmodseq = highestmodseq + 1 WHERE id = :m"
        " RETURNING uidnext, highestmodseq",
        {"n": n, "m": mailbox_id},
    )
    return uidnext - n, modseq


def next_modseq(tx: Tx, mailbox_id: int) -> int:
    return tx.value(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = :m RETURNING highestmodseq",
        {"m": mailbox_id},
    )


def reference_blob(tx: Tx, p: Prepared, count: int = 1) -> int:
    """The blob id of a body, with `count` more references (inserted if new)."""
    return reference_blobs(tx, {p.sha: (p, count)})[p.sha]


def reference_blobs(tx: Tx, bodies: dict[bytes, tuple[Prepared, int]]) -> dict[bytes, int]:
    """Blob ids of many bodies (sha256 -> (prepared, references to add)) in one upsert: new bodies get
    the locator the writer stored them at, known ones gain references. In SHA-256 order, so that two
    store processes lock rows of the same bodies in the same order."""
    rows = tx.insert(
        f"INSERT INTO blobs (sha256, size, locator, refs, parsed, sent_day, {', '.join(sortkeys.COLUMNS)})",
        ("bytea", "int8", "text", "int4", "bytea", "int4", *sortkeys.COLUMN_TYPES),
        [
            (sha, p.size, tx.new_blobs.get(sha, ""), n, p.parsed, p.sent_day, *p.keys.row())
            for sha, (p, n) in sorted(bodies.items())
        ],
        " ON CONFLICT (sha256) DO UPDATE SET refs = blobs.refs + excluded.refs RETURNING id, sha256, locator",
    )
    ids: dict[bytes, int] = {}
    for bid, sha, locator in rows:
        if not locator:  # known when the group began, removed by another store process since: retry later
            raise ServiceUnavailable("body vanished while being stored")
        ids[bytes(sha)] = bid
    return ids


class Usage:
    """Per-user quota and usage within one operation; `flush` writes the counters back."""

    def __init__(self, tx: Tx):
        self.tx = tx
        self.users: dict[int, list] = {}  # user_id -> [quota, used, added bytes, added messages]

    def load(self, user_ids: list[int]) -> None:
        """Read (and on PostgreSQL lock) these users' rows at once, in id order: two store processes
        delivering to the same users then lock them in the same order, not into a deadlock."""
        for i in range(0, len(user_ids), 500):
            clause, params = self.tx.among("id", "u", sorted(user_ids)[i : i + 500], "int4")
            rows = self.tx.all(
                f"SELECT id, quota_bytes, used_bytes FROM users WHERE {clause} ORDER BY id"
                + (" FOR UPDATE" if self.tx.postgres else ""),
                params,
            )
            for user_id, quota, used in rows:
                self.users.setdefault(user_id, [quota, used, 0, 0])

    def _get(self, user_id: int) -> list:
        u = self.users.get(user_id)
        if u is None:
            quota, used = self.tx.one(
                "SELECT quota_bytes, used_bytes FROM users WHERE id = :u" + (" FOR UPDATE" if self.tx.postgres else ""),
                {"u": user_id},
            )
            u = self.users[user_id] = [quota, used, 0, 0]
        return u

    def check(self, user_id: int, size: int) -> None:
        quota, used, added, _ = self._get(user_id)
        if quota is not None and used + added + size > quota:
            raise QuotaExceeded(f"quota of {quota} bytes exceeded", permanent=size > quota)

    def charge(self, user_id: int, size: int, check: bool = True) -> None:
        if check:
            self.check(user_id, size)
        u = self._get(user_id)
        u[2] += size
        u[3] += 1

    def flush(self) -> None:
        for user_id, (_, _, added, count) in self.users.items():
            if count or added:
                self.tx.run(
                    "UPDATE users SET used_bytes = used_bytes + :b, messages = messages + :n WHERE id = :u",
                    {"b": added, "n": count, "u": user_id},
                )
        self.users.clear()


# Tx.insert(*INSERT_MESSAGE, rows): (mailbox_id, uid, modseq, flags, keywords, size, internal_date, blob_id,
# queue_id, saved_at): saved_at is when the row came into its mailbox (RFC 8514 save date; a copy or a move
# gets its own)
INSERT_MESSAGE = (
    "INSERT INTO messages (mailbox_id, uid, modseq, flags, keywords, size, internal_date, blob_id, queue_id,"
    " saved_at)",
    ("int4", "int8", "int8", "int4", "int8", "int8", "int8", "int8", "text", "int8"),
)
INSERT_PENDING = (
    "INSERT INTO pending_retrievals (mailbox_id, uid, queue_id, trace_id)",
    ("int4", "int8", "text", "text"),
)
