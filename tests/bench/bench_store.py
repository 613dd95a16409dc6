"""mailbox-store benchmark (issue 5 §8): the store as its own process, driven through StoreClient (REST).

    python -m tests.bench.bench_store            # SQLite, then PostgreSQL if MAILFLOW_TEST_POSTGRES_URL is set,
                                                 # there with bodies in segment files and in the database
    python -m tests.bench.bench_store --quick    # smaller numbers, for a smoke run

Figures:
  append      10,000 messages of 4 KiB delivered in batches of 50 from 4 concurrent callers (msg/s), and
              2,000 more as single-item calls from 32 concurrent callers (group commit at work)
  select      UIDs + flags + MODSEQs of a 100,000-message mailbox, end to end through REST: the first call
              (scanned from the database, "cold") and the median of 4 more (the listing kept in memory)
  fetch       1,000 bodies in batches of 100 (msg/s)
  flags       \\Seen set on 10,000 messages in one call (ms)
  overhead    bytes on disk (database + WAL + blob segments) per message beyond the body (with the bodies
              in PostgreSQL, lz4 in TOAST shrinks this benchmark's repetitive text: the figure can be < 0)
Targets: append >= 1,500 msg/s, select < 300 ms, overhead < 1 KiB; PostgreSQL within 2x; bodies in
PostgreSQL ("postgres+bodies", MAILFLOW_STORE_BLOBS=postgres, what several store replicas need) at most
20 % slower than segment files on the same PostgreSQL (issue 16).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient
from tests.bench.common import compare, rate, report
from tests.support import postgres_schema


def body(i: int, size: int) -> bytes:
    head = (
        f"Received: from client.example (localhost [127.0.0.1])\r\n\tby mx.bench.test (Mailflow) with ESMTP\r\n"
        f"\tfor <user1@bench.test>; Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        f"From: Bench <sender@elsewhere.test>\r\nTo: user1@bench.test\r\nSubject: bench message {i}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.{uuid.uuid4().hex}@elsewhere.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    n = max(0, size - len(head))
    return head + (line * (n // len(line) + 1))[:n]


def disk_bytes(data_dir: Path, db_url: str | None) -> int:
    """Blob segments plus the database: SQLite file after a WAL checkpoint, or PostgreSQL's relations."""
    total = sum(p.stat().st_size for p in (data_dir / "blobs").glob("*.pack"))
    if db_url is None:
        import sqlite3

        with sqlite3.connect(data_dir / "mailbox-store.db") as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return total + sum(p.stat().st_size for p in data_dir.glob("mailbox-store.db*"))
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as c:
        total += c.execute(
            sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        ).scalar()
    engine.dispose()
    return int(total)


async def deliver_batches(
    client: StoreClient, user: str, start: int, count: int, size: int, batch: int, callers: int
):
    sizes = 0
    queue = list(range(start, start + count))
    chunks = [queue[i : i + batch] for i in range(0, len(queue), batch)]

    async def worker():
        nonlocal sizes
        while chunks:
            chunk = chunks.pop()
            items = [DeliverItem(f"B{i}/{user}", user, body(i, size), queue_id=f"B{i}") for i in chunk]
            sizes += sum(len(it.body) for it in items)
            results = await client.deliver(items)
            assert all(r.status == "stored" for r in results), results[:2]

    await asyncio.gather(*(worker() for _ in range(callers)))
    return sizes


async def scenario(stack: Stack, label: str, quick: bool, db_url: str | None) -> dict:
    url = stack.http_url("mailbox-store")
    n_append, n_list = (2_000, 20_000) if quick else (10_000, 100_000)
    async with httpx.AsyncClient(
        base_url=url, headers={ADMIN_TOKEN_HEADER: stack.admin_token}, timeout=60
    ) as a:
        await a.post("/admin/domains", json={"name": "bench.test"})
        for u in ("user1", "user2", "user3"):
            await a.post("/admin/users", json={"address": f"{u}@bench.test", "password": "pw"})
    client = StoreClient(url, stack.service_token, timeout=120)
    out: dict = {"db": label}
    try:
        # 1. append through REST: batches from a few callers (what delivery does)
        t = time.perf_counter()
        body_bytes = await deliver_batches(client, "user1@bench.test", 0, n_append, 4096, 50, 4)
        dt = time.perf_counter() - t
        out["append_msg_s"] = round(n_append / dt)
        # single-item calls from many callers: only group commit makes these fast
        n_single = n_append // 5
        t = time.perf_counter()
        body_bytes += await deliver_batches(client, "user1@bench.test", n_append, n_single, 4096, 1, 32)
        out["append_single_msg_s"] = round(n_single / (time.perf_counter() - t))
        stored = n_append + n_single
        await asyncio.sleep(0.5)
        out["overhead_bytes_per_msg"] = round((disk_bytes(stack.data_dir, db_url) - body_bytes) / stored)

        # 2. a big mailbox for listing (1 KiB bodies: listing never reads them)
        await deliver_batches(client, "user2@bench.test", 0, n_list, 1024, 200, 4)
        p = await client.authenticate("user2@bench.test", "pw")
        times = []
        for _ in range(5):
            t = time.perf_counter()
            sel = await client.select(p, "INBOX", claim_recent=False)
            times.append((time.perf_counter() - t) * 1000)
        assert len(sel.uids) == n_list
        out["select_cold_ms"] = round(times[0], 1)  # scanned from the database
        out["select_ms"] = round(statistics.median(times[1:]), 1)  # the listing kept in memory
        out["select_messages"] = n_list

        # 3. fetch 1,000 bodies in batches of 100
        p1 = await client.authenticate("user1@bench.test", "pw")
        sel1 = await client.select(p1, "INBOX", claim_recent=False)
        uids = sel1.uids[:1000]
        t = time.perf_counter()
        got = 0
        for i in range(0, len(uids), 100):
            got += len(await client.fetch_bodies(p1, sel1.status.id, uids[i : i + 100]))
        out["fetch_msg_s"] = round(got / (time.perf_counter() - t))

        # 4. \Seen on 10,000 messages in one call
        flag_uids = sel.uids[:10_000]
        t = time.perf_counter()
        res = await client.store_flags(p, sel.status.id, flag_uids, "add", frozenset({"\\Seen"}))
        out["flag_10k_ms"] = round((time.perf_counter() - t) * 1000, 1)
        assert len(res.updated) == len(flag_uids)

        # 5. logins from the cache (the IMAP login target goes through here)
        t = time.perf_counter()
        await asyncio.gather(*(client.authenticate("user3@bench.test", "pw") for _ in range(200)))
        out["logins_s"] = round(200 / (time.perf_counter() - t))
    finally:
        await client.close()
    return out


def run(label: str, quick: bool, db_url: str | None, blobs: str = "segments") -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        env = {"MAILFLOW_LOG_LEVEL": "WARNING", "MAILFLOW_STORE_BLOBS": blobs}
        if db_url:
            env["MAILFLOW_STORE_DATABASE_URL"] = db_url
        stack = Stack(Path(tmp), Ports.free(), services=("mailbox-store",), env=env)
        with stack:
            return asyncio.run(scenario(stack, label, quick, db_url))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("sqlite", "postgres"))  # postgres: both ways of keeping bodies
    args = ap.parse_args(argv)
    rows = []
    if args.only != "postgres":
        rows.append(run("sqlite", args.quick, None))
    pg = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
    if pg and args.only != "sqlite":
        with postgres_schema(pg) as url:
            rows.append(run("postgres", args.quick, url))
        with postgres_schema(pg) as url:
            rows.append(run("postgres+bodies", args.quick, url, blobs="postgres"))
    cols = ["db", "append_msg_s", "append_single_msg_s", "select_cold_ms", "select_ms", "fetch_msg_s", "flag_10k_ms", "logins_s",
            "overhead_bytes_per_msg"]  # fmt: skip
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    for r in rows:
        report("store", **r)
    # no counterpart among the peers: Dovecot's storage is not a service of its own
    compare("mailbox-store append (REST, batches of 50, 4 callers)",
            ", ".join(f"{rate(r['append_msg_s'])} {r['db']}" for r in rows), None)  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
