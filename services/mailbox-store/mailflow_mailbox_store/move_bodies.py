"""python -m mailflow_mailbox_store.move_bodies: move a store's bodies from its segment files into its
PostgreSQL database, to go from one store process (MAILFLOW_STORE_BLOBS=segments) to several (=postgres).

    # the store stopped (deliveries wait in the queue meanwhile), in its environment:
    python -m mailflow_mailbox_store.move_bodies      # then MAILFLOW_STORE_BLOBS=postgres, start the store

Reads MAILFLOW_STORE_DATABASE_URL (PostgreSQL) and MAILFLOW_STORE_BLOB_DIR as the store does. In chunks
of 256 bodies, each in a transaction of its own: read from the segments, check each against its SHA-256,
insert into blob_bodies, point the blobs row at it (only if it still points at the segment). Stopped
half-way, it goes on where it was when run again; run on a store with nothing left in segments, it does
nothing. A body that is missing or does not match its SHA-256 stops it with an error naming the body,
everything moved so far staying moved. The segment files are left as they were: delete the folder once
the store runs on PostgreSQL. Not while a store process on segments serves (it cannot read a pg: locator).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys

from mailflow import log
from mailflow_mailbox_store.blobs import PG_PREFIX, SegmentBlobs
from mailflow_mailbox_store.db import Database, Tx
from mailflow_mailbox_store.settings import Settings

logger = logging.getLogger(__name__)


def waiting(tx: Tx, after: int, n: int) -> list[tuple[int, str, bytes]]:
    """(blob id, segment locator, sha256) of the next n bodies still in segments, by id."""
    return tx.all(
        "SELECT id, locator, sha256 FROM blobs WHERE id > :a AND locator NOT LIKE :p ORDER BY id LIMIT :n",
        {"a": after, "p": f"{PG_PREFIX}%", "n": n},
    )


def repoint(tx: Tx, db: Database, rows: list[tuple[int, str, bytes]], bodies: list[bytes]) -> int:
    """Insert the bodies and point their blobs rows at them; a row changed meanwhile keeps its locator
    (and the copy made for it goes). Returns how many moved."""
    new = db.blobs.put_many(tx, bodies)
    stale = []
    for (blob_id, old, _), loc in zip(rows, new, strict=True):
        tx.run("UPDATE blobs SET locator = :n WHERE id = :i AND locator = :o", {"n": loc, "i": blob_id, "o": old})
        if tx.rowcount != 1:
            stale.append(loc)
    if stale:
        db.blobs.discard(tx, stale)
    return len(rows) - len(stale)


async def move(db: Database, segments: SegmentBlobs, chunk: int = 256) -> int:
    """Move every body still in segments; the number moved."""
    moved, after = 0, 0
    while rows := await db.read(waiting, after, chunk):
        bodies = await asyncio.to_thread(segments.get_many, [r[1] for r in rows])
        for (blob_id, locator, sha), data in zip(rows, bodies, strict=True):
            if hashlib.sha256(data).digest() != bytes(sha):
                raise ValueError(f"body {blob_id} at {locator} does not match its SHA-256: nothing moved for it")
        moved += await db.write(repoint, db, rows, bodies)
        after = rows[-1][0]
        logger.info("bodies moved", extra={"moved": moved})
    return moved


async def main_async(settings: Settings) -> int:
    db = Database(settings.database_url, None, readers=2)
    segments = SegmentBlobs(settings.blob_dir, settings.segment_bytes)
    await asyncio.to_thread(db.migrate)
    db.start()
    try:
        return await move(db, segments)
    finally:
        await asyncio.to_thread(db.close)
        segments.close()


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    settings = Settings(blobs="postgres")  # refuses a database that is not PostgreSQL
    log.setup("mailbox-store", settings.log_level, settings.log_format)
    moved = asyncio.run(main_async(settings))
    print(f"{moved} bodies moved into PostgreSQL; set MAILFLOW_STORE_BLOBS=postgres before starting the store")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
