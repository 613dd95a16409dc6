"""What a shared blob store costs against segment files (issue 16): a measuring script, not a test and not
part of `make bench`.

    .venv/bin/python -m tests.bench.measure_blobs [--pg postgresql://postgres@127.0.0.1:5432/test]

For bodies of 4 KiB (mail text) and 1 MiB (a base64 attachment, what big mail mostly is), each body new
(random), durable on return as the store's writer needs it:
  segments   SegmentBlobs.append (one pwrite + fdatasync per batch) and get (pread)
  pg-*       one INSERT of the batch into a bytea table + COMMIT (synchronous_commit as the server has
             it), and SELECT by id; pglz (PostgreSQL's default TOAST compression), lz4, and EXTERNAL
             (stored uncompressed). In the store the INSERT joins the group's own transaction, so its
             COMMIT is the one the metadata pays anyway: the "put" here is an upper bound.
  jetstream  nats-py's object store on a nats-server this script starts (file storage, sync_interval
             always, R1: a cluster's R3 adds a round trip to the replicas), put one body at a time or a
             batch concurrently, get by name.
Median latency of one put of 1 body, of a batch of 32 (4 KiB) or 4 (1 MiB) and its cost per body, of one
get, of getting such a batch at once (PostgreSQL: one SELECT ... = ANY, as the store reads a FETCH's
bodies; JetStream: concurrent gets) per body, and the space each takes per byte stored (PostgreSQL: pg_total_relation_size, heap + TOAST + index;
JetStream: the stream's bytes and the files on disk). Runs in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats
import psycopg
from nats.js.api import ObjectStoreConfig, StorageType

from mailflow.natsserver import NatsServer
from mailflow.stack import free_port
from mailflow_mailbox_store.blobs import SegmentBlobs

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write"
).split()
HEAD = "From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: {n}\r\nMessage-ID: <{n}@a.test>\r\n\r\n"


def text_body(size: int, rng: random.Random) -> bytes:
    out = [HEAD.format(n=uuid.uuid4().hex)]
    n = len(out[0])
    while n < size:
        line = " ".join(rng.choices(WORDS, k=12)) + "\r\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def attachment_body(size: int) -> bytes:
    head = HEAD.format(n=uuid.uuid4().hex).encode()
    raw = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return (head + raw)[:size]


def bodies(size: int, n: int, rng: random.Random) -> list[bytes]:
    return [text_body(size, rng) if size <= 64 * 1024 else attachment_body(size) for _ in range(n)]


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def report(name: str, label: str, one: list[float], batch: list[float], per_batch: int, get: list[float],
           get_batch: list[float], space: str) -> None:  # fmt: skip
    b = median_ms(batch)
    print(
        f"{name:>13} {label:>6}: put 1 {median_ms(one):7.2f} ms | put {per_batch:>2} {b:7.2f} ms"
        f" ({b / per_batch:6.2f} ms/body) | get {median_ms(get):6.2f} ms"
        f" | get {per_batch:>2} {median_ms(get_batch) / per_batch:6.3f} ms/body | {space}",
        flush=True,
    )


def timed(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def measure_segments(folder: Path, size: int, runs: int, per_batch: int, rng: random.Random) -> None:
    blobs = SegmentBlobs(folder / f"seg-{size}")
    one, batch, get, locs, stored = [], [], [], [], 0
    for _ in range(runs):
        data = bodies(size, 1, rng)
        t, got = timed(blobs.append, data)
        one.append(t)
        locs += got
        stored += size
        data = bodies(size, per_batch, rng)
        t, got = timed(blobs.append, data)
        batch.append(t)
        locs += got
        stored += size * per_batch
    for loc in rng.sample(locs, min(len(locs), runs * 2)):
        t, _ = timed(blobs.get, loc)
        get.append(t)
    get_batch = [timed(blobs.get_many, rng.sample(locs, per_batch))[0] for _ in range(runs)]
    on_disk = sum(blobs.segments().values())
    blobs.close()
    report("segments", label(size), one, batch, per_batch, get, get_batch, f"space {on_disk / stored:.3f} x")


def label(size: int) -> str:
    return f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"


def measure_pg(url: str, kind: str, size: int, runs: int, per_batch: int, rng: random.Random) -> None:
    column = {"pglz": "bytea COMPRESSION pglz", "lz4": "bytea COMPRESSION lz4", "external": "bytea"}[kind]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS measure_blobs")
        conn.execute(f"CREATE TABLE measure_blobs (id bigserial PRIMARY KEY, body {column} NOT NULL)")
        if kind == "external":
            conn.execute("ALTER TABLE measure_blobs ALTER COLUMN body SET STORAGE EXTERNAL")

        def put(data: list[bytes]) -> list[int]:
            with conn.transaction():
                cur = conn.execute(
                    "INSERT INTO measure_blobs (body) SELECT * FROM unnest(%b::bytea[]) RETURNING id", [data]
                )
                return [r[0] for r in cur.fetchall()]

        def get(i: int) -> bytes:
            return conn.execute("SELECT body FROM measure_blobs WHERE id = %s", [i]).fetchone()[0]

        one, batch, gets, ids, stored = [], [], [], [], 0
        for _ in range(runs):
            t, got = timed(put, bodies(size, 1, rng))
            one.append(t)
            ids += got
            t, got = timed(put, bodies(size, per_batch, rng))
            batch.append(t)
            ids += got
            stored += size * (1 + per_batch)
        for i in rng.sample(ids, min(len(ids), runs * 2)):
            t, body = timed(get, i)
            assert len(body) == size
            gets.append(t)

        def get_many(wanted: list[int]) -> list[bytes]:
            return [r[0] for r in conn.execute("SELECT body FROM measure_blobs WHERE id = ANY(%s)", [wanted])]

        get_batch = [timed(get_many, rng.sample(ids, per_batch))[0] for _ in range(runs)]
        conn.execute("VACUUM measure_blobs")
        total = conn.execute("SELECT pg_total_relation_size('measure_blobs')").fetchone()[0]
        conn.execute("DROP TABLE measure_blobs")
    report(f"pg-{kind}", label(size), one, batch, per_batch, gets, get_batch, f"space {total / stored:.3f} x")


def files_bytes(folder: Path, name: str) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and name in str(f))


async def measure_jetstream(url: str, store_dir: Path, size: int, runs: int, per_batch: int, rng: random.Random) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    bucket = f"measure{size}"
    obs = await js.create_object_store(bucket, config=ObjectStoreConfig(storage=StorageType.FILE))
    one, batch, gets, names, stored = [], [], [], [], 0

    async def put(data: bytes) -> str:
        name = uuid.uuid4().hex
        await obs.put(name, data)
        return name

    for _ in range(runs):
        data = bodies(size, 1, rng)
        started = time.perf_counter()
        names.append(await put(data[0]))
        one.append(time.perf_counter() - started)
        data = bodies(size, per_batch, rng)
        started = time.perf_counter()
        names += await asyncio.gather(*(put(d) for d in data))
        batch.append(time.perf_counter() - started)
        stored += size * (1 + per_batch)
    for name in rng.sample(names, min(len(names), runs * 2)):
        started = time.perf_counter()
        res = await obs.get(name)
        gets.append(time.perf_counter() - started)
        assert len(res.data) == size
    get_batch = []
    for _ in range(runs):
        started = time.perf_counter()
        await asyncio.gather(*(obs.get(name) for name in rng.sample(names, per_batch)))
        get_batch.append(time.perf_counter() - started)
    info = await js.stream_info(f"OBJ_{bucket}")
    on_disk = await asyncio.to_thread(files_bytes, store_dir, bucket)
    await js.delete_object_store(bucket)
    await nc.close()
    space = f"space {info.state.bytes / stored:.3f} x (stream), {on_disk / stored:.3f} x (files)"
    report("jetstream", label(size), one, batch, per_batch, gets, get_batch, space)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(16)
    schema = f"measure_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    pg_url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
    print(f"PostgreSQL synchronous_commit={sync}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    try:
        with tempfile.TemporaryDirectory(prefix="measure-blobs-", dir="/var/tmp") as tmp:
            folder = Path(tmp)
            server = NatsServer(folder / "nats", port=free_port(), sync_always=True, max_payload=8 * 1024 * 1024).start()
            try:
                for size, per_batch, runs in ((4096, 32, args.runs), (1 << 20, 4, max(5, args.runs // 3))):
                    measure_segments(folder, size, runs, per_batch, rng)
                    for kind in ("pglz", "lz4", "external"):
                        measure_pg(pg_url, kind, size, runs, per_batch, rng)
                    asyncio.run(measure_jetstream(server.url, folder / "nats", size, runs, per_batch, rng))
            finally:
                server.stop()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
