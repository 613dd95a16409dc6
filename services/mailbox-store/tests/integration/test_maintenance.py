"""Maintenance: old delivery keys forgotten, unreferenced bodies removed, mostly-dead blob segments
compacted (live bodies moved, the segment file deleted), and every body still reads back."""

from __future__ import annotations

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
    done = await maintenance.run_once(store, key_days=30)
    assert done["keys"] == 1 and done["locks"] == 1
    assert await store.db.read(lambda tx: tx.value("SELECT COUNT(*) FROM delivery_keys")) == 0
