"""Maintenance: old delivery keys forgotten, unreferenced bodies removed, mostly-dead blob segments
compacted (live bodies moved, the segment file deleted), and every body still reads back."""

from __future__ import annotations

import os

import pytest

from mailflow_mailbox_store import app, maintenance
from mailflow_mailbox_store.sessions import Session
from mailflow_mailbox_store.uidset import UidSet
from tests.support.store import MemoryPublisher


@pytest.fixture
async def small_segments(tmp_path, db_url):
    from ..conftest import make_settings

    s = await app.open_store(make_settings(tmp_path, db_url, segment_bytes=8_000), MemoryPublisher())
    await s.create_domain("example.test")
    await s.create_user("alice@example.test", "pw", None)
    yield s
    await app.close_store(s)


def body(i: int) -> bytes:
    return f"From: a@elsewhere.test\r\nSubject: n{i}\r\n\r\n".encode() + b"x" * 2000 + b"\r\n"


async def test_compaction_keeps_live_bodies_and_frees_dead_segments(small_segments):
    from mailflow.store.api import DeliverItem

    store = small_segments
    for i in range(12):  # one item per call: one group commit each, segments of ~8 KB fill up
        [r] = await store.deliver([DeliverItem(f"k{i}", "alice@example.test", body(i))])
        assert r.status == "stored"
    before = store.blobs.segments()
    assert len(before) >= 3
    p = await store.authenticate("alice@example.test", "pw")
    s = await store.session(p.token)
    mb = (await store.status(s, "INBOX")).id
    doomed = [u for u in range(1, 13) if u % 4]  # keep 4, 8, 12
    await store.store_flags(s, mb, UidSet.of(doomed), "add", ["\\Deleted"], None)
    await store.expunge(s, mb, None)
    assert await store.db.write(maintenance.purge_blobs, store.blobs, exclusive=True) == len(doomed)
    compacted = await maintenance.compact(store, grace=0)
    assert compacted >= 1
    after = store.blobs.segments()
    assert sum(after.values()) < sum(before.values())
    locs, _ = await store.bodies(s, mb, UidSet([(1, 12)]), 0)
    assert [u for u, _, _ in locs] == [4, 8, 12]
    assert await store.read_bodies([loc for _, loc, _ in locs]) == [body(3), body(7), body(11)]


async def test_old_keys_and_stale_locks_are_removed(small_segments):
    from mailflow.store.api import DeliverItem

    store = small_segments
    await store.deliver([DeliverItem("old", "alice@example.test", body(1))])
    await store.db.write(lambda tx: tx.run("UPDATE delivery_keys SET created_at = 0"))
    user_id = await store.db.read(lambda tx: tx.value("SELECT id FROM users"))
    await store.pop3_lock(Session(user_id, "sid", 0, 1))
    await store.db.write(lambda tx: tx.run("UPDATE pop3_locks SET expires_at = 0"))
    done = await maintenance.run_once(store, key_days=30, expunged_keep=100_000)
    assert done["keys"] == 1 and done["locks"] == 1
    assert await store.db.read(lambda tx: tx.value("SELECT COUNT(*) FROM delivery_keys")) == 0


async def test_compaction_leaves_a_body_that_no_longer_matches_its_sha256_where_it_is(small_segments, caplog):
    """A body whose octets changed on disk is not copied on as if it were good: it keeps its locator
    (so its segment stays), the others move, and the log and a metric say so, without the content."""
    from prometheus_client import REGISTRY

    from mailflow.store.api import DeliverItem
    from mailflow_mailbox_store.blobs import parse_locator

    store = small_segments
    for i in range(12):
        await store.deliver([DeliverItem(f"k{i}", "alice@example.test", body(i))])
    p = await store.authenticate("alice@example.test", "pw")
    s = await store.session(p.token)
    mb = (await store.status(s, "INBOX")).id
    await store.store_flags(s, mb, UidSet.of([u for u in range(1, 13) if u % 4]), "add", ["\\Deleted"], None)
    await store.expunge(s, mb, None)
    await store.db.write(maintenance.purge_blobs, store.blobs, exclusive=True)
    before = (await store.bodies(s, mb, UidSet([(1, 12)]), 0))[0]
    _, rotten, _ = before[0]  # uid 4, in a segment that is mostly dead now
    seg, off, length = parse_locator(rotten)
    fd = os.open(store.blobs.path(seg), os.O_WRONLY)
    os.pwrite(fd, b"Y", off + length - 10)  # one octet of the body's "xxx...", as a failing disk or a stray write would
    os.close(fd)
    counted = REGISTRY.get_sample_value("mailflow_mailbox_store_blob_corrupt_total") or 0.0
    await maintenance.compact(store, grace=0)
    after = (await store.bodies(s, mb, UidSet([(1, 12)]), 0))[0]
    assert after[0][1] == rotten and store.blobs.path(seg).exists()  # left where it is, its segment kept
    assert [loc for _, loc, _ in after[1:]] != [loc for _, loc, _ in before[1:]]  # the good ones moved on
    assert await store.read_bodies([loc for _, loc, _ in after[1:]]) == [body(7), body(11)]
    assert REGISTRY.get_sample_value("mailflow_mailbox_store_blob_corrupt_total") == counted + 1
    (line,) = [r for r in caplog.records if "SHA-256" in r.getMessage()]
    assert line.levelname == "ERROR" and line.locator == rotten and b"x" * 20 not in repr(line.__dict__).encode()
