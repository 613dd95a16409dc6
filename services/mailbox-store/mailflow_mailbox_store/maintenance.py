"""Periodic clean-up: forget old delivery keys, drop expired POP3 locks and Sieve vacation memories,
prune expunge tombstones past the newest `expunged_keep` per mailbox, remove bodies no message uses,
and compact blob segments that are mostly dead space.

Each chore is its own write operation; one that fails is logged and tried again next round. Removing
an unreferenced body runs as an exclusive write (never in a group with a delivery that might be about
to reference the same body again); with bodies in PostgreSQL the body goes in that same transaction.
Every store process runs these chores: on one PostgreSQL they overlap harmlessly (a row that another
process removed first is simply not there any more; a body that another process's delivery referenced
again meanwhile has refs > 0 when the DELETE gets to its row, and stays).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mailflow_mailbox_store import metrics
from mailflow_mailbox_store.blobs import BlobStore, intact
from mailflow_mailbox_store.db import Tx

log = logging.getLogger(__name__)


def purge_keys(tx: Tx, before: int) -> int:
    tx.run("DELETE FROM delivery_keys WHERE created_at < :b", {"b": before})
    return max(tx.rowcount, 0)


def purge_locks(tx: Tx, now: int) -> int:
    tx.run("DELETE FROM pop3_locks WHERE expires_at < :n", {"n": now})
    return max(tx.rowcount, 0)


def purge_vacation(tx: Tx, now: int) -> int:
    tx.run("DELETE FROM sieve_vacation WHERE expires_at < :n", {"n": now})
    return max(tx.rowcount, 0)


def purge_tombstones(tx: Tx, keep: int) -> int:
    """Keep the newest `keep` tombstones of each mailbox (by MODSEQ; all of one expunge share theirs, so
    a little fewer may stay) and raise the mailbox's vanished_floor to the highest MODSEQ dropped: from
    then on a QRESYNC asking about an earlier MODSEQ is told complete=False (messages.vanished_since),
    never a short list taken for the whole truth. The floor is raised before the rows go, in the same
    transaction. One scan of the table per round finds the mailboxes over the limit."""
    over = tx.all("SELECT mailbox_id FROM expunged GROUP BY mailbox_id HAVING COUNT(*) > :k", {"k": keep})
    dropped = 0
    for (mailbox_id,) in over:
        p = {"m": mailbox_id, "k": keep}
        cut = tx.value(
            "SELECT modseq FROM expunged WHERE mailbox_id = :m ORDER BY modseq DESC, uid DESC LIMIT 1 OFFSET :k",
            p,
        )
        if cut is None:
            continue
        p["c"] = cut
        tx.run(
            "UPDATE mailboxes SET vanished_floor = CASE WHEN vanished_floor > :c THEN vanished_floor ELSE :c END"
            " WHERE id = :m",
            p,
        )
        tx.run("DELETE FROM expunged WHERE mailbox_id = :m AND modseq <= :c", p)
        dropped += max(tx.rowcount, 0)
    return dropped


def purge_blobs(tx: Tx, blobs: BlobStore) -> int:
    gone = [r[0] for r in tx.all("DELETE FROM blobs WHERE refs <= 0 RETURNING locator")]
    if gone:
        blobs.discard(tx, gone)
    return len(gone)


async def run_once(store, key_days: int, expunged_keep: int) -> dict[str, int]:
    now = int(time.time())
    done = {
        "keys": await store.db.write(purge_keys, now - key_days * 86_400),
        "locks": await store.db.write(purge_locks, now),
        "vacation": await store.db.write(purge_vacation, now),
        "tombstones": await store.db.write(purge_tombstones, expunged_keep),
        "blobs": await store.db.write(purge_blobs, store.blobs, exclusive=True),
    }
    done["segments"] = await compact(store)
    for what, n in done.items():
        if n:
            metrics.MAINTENANCE.labels(what).inc(n)
    return done


def live_bytes(tx: Tx) -> dict[int, int]:
    """Segment number -> bytes still referenced (one scan of the blobs table)."""
    out: dict[int, int] = {}
    for locator, size in tx.all("SELECT locator, size FROM blobs"):
        seg = int(locator.split(":", 1)[0])
        out[seg] = out.get(seg, 0) + size
    return out


def relocate(tx: Tx, moves: list[tuple[int, str, str]]) -> int:
    """Point blobs at their new copies; a blob changed meanwhile (its old locator gone) is left alone."""
    for blob_id, old, new in moves:
        tx.run(
            "UPDATE blobs SET locator = :n WHERE id = :i AND locator = :o", {"n": new, "i": blob_id, "o": old}
        )
    return len(moves)


def _intact_bodies(blobs, rows: list) -> list[tuple[tuple, bytes]]:
    """(row, body) for the rows (id, locator, sha256) whose bodies are intact; reads and hashes, so it
    runs in a thread."""
    out = []
    for row in rows:
        data = blobs.get(row[1])
        if intact(row[1], data, bytes(row[2])):
            out.append((row, data))
    return out


async def compact(store, min_live_ratio: float = 0.5, grace: float = 60.0) -> int:
    """Copy the live bodies out of segments that are mostly dead, then delete those segments once
    readers that looked up an old locator just before the switch are done (after `grace` seconds).
    A body that no longer matches its SHA-256 (`blobs.intact`: logged, counted) is not copied: it keeps
    its locator, so its segment is kept too."""
    blobs = store.blobs
    if not hasattr(blobs, "segments"):
        return 0
    sizes = blobs.segments()
    metrics.SEGMENT_BYTES.set(sum(sizes.values()))
    live = await store.db.read(live_bytes)
    candidates = [
        seg
        for seg, size in sizes.items()
        if seg != blobs.active and size and live.get(seg, 0) < size * min_live_ratio
    ]
    for seg in candidates:
        rows = await store.db.read(
            lambda tx, seg=seg: tx.all(
                "SELECT id, locator, sha256 FROM blobs WHERE locator LIKE :p", {"p": f"{seg}:%"}
            )
        )
        moves = []
        for i in range(0, len(rows), 256):
            chunk = rows[i : i + 256]
            good = await asyncio.to_thread(_intact_bodies, blobs, chunk)
            new = await asyncio.to_thread(blobs.append, [data for _, data in good]) if good else []
            moves += [(r[0], r[1], loc) for (r, _), loc in zip(good, new, strict=True)]
        await store.db.write(relocate, moves)
        left = await store.db.read(
            lambda tx, seg=seg: tx.value(
                "SELECT COUNT(*) FROM blobs WHERE locator LIKE :p", {"p": f"{seg}:%"}
            )
        )
        if left:
            log.warning(
                "segment still referenced after compaction; kept", extra={"segment": seg, "blobs": left}
            )
            continue
        if grace > 0:
            asyncio.get_running_loop().call_later(grace, blobs.remove_segment, seg)
        else:
            blobs.remove_segment(seg)
        log.info("segment compacted", extra={"segment": seg, "moved": len(moves)})
    return len(candidates)


async def loop(store, interval: float, key_days: int, expunged_keep: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except TimeoutError:
            pass
        try:
            done = await run_once(store, key_days, expunged_keep)
            if any(done.values()):
                log.info("maintenance", extra=done)
        except Exception:
            log.exception("maintenance failed; trying again next round")
