"""move_bodies: a store that kept its bodies in segment files, moved into PostgreSQL, serves every message
with MAILFLOW_STORE_BLOBS=postgres; a second run moves nothing; a body that does not match its SHA-256
stops the move and is left where it was."""

from __future__ import annotations

import pytest

from mailflow.store.api import DeliverItem
from mailflow_mailbox_store import app, move_bodies
from mailflow_mailbox_store.uidset import UidSet
from tests.support.store import MemoryPublisher

from ..conftest import make_settings


def body(i: int) -> bytes:
    return f"From: a@elsewhere.test\r\nSubject: n{i}\r\n\r\n".encode() + b"x" * (100 * i) + b"\r\n"


async def inbox(store, user: str) -> tuple[list[bytes], list[str]]:
    p = await store.authenticate(f"{user}@example.test", "pw")
    s = await store.session(p.token)
    mb = (await store.status(s, "INBOX")).id
    rows, _ = await store.bodies(s, mb, UidSet([(1, 1000)]), 0)
    return await store.read_bodies([loc for _, loc, _ in rows]), [loc for _, loc, _ in rows]


async def test_bodies_move_from_segments_into_postgres(tmp_path, pg_url):
    on_segments = await app.open_store(make_settings(tmp_path, pg_url), MemoryPublisher())
    await on_segments.create_domain("example.test")
    for user in ("alice", "bob"):
        await on_segments.create_user(f"{user}@example.test", "pw", None)
    items = [DeliverItem(f"k{i}", "alice@example.test", body(i)) for i in range(20)]
    items += [DeliverItem("shared", "bob@example.test", body(3))]  # the same body as alice's k3
    assert {r.status for r in await on_segments.deliver(items)} == {"stored"}
    before = (await inbox(on_segments, "alice"))[0], (await inbox(on_segments, "bob"))[0]
    await app.close_store(on_segments)

    settings = make_settings(tmp_path, pg_url, blobs="postgres")
    assert await move_bodies.main_async(settings) == 20  # 20 distinct bodies
    assert await move_bodies.main_async(settings) == 0
    on_postgres = await app.open_store(settings, MemoryPublisher())
    try:
        (alice, locators), (bob, _) = await inbox(on_postgres, "alice"), await inbox(on_postgres, "bob")
        assert (alice, bob) == before
        assert all(x.startswith("pg:") for x in locators)
        counts = await on_postgres.db.read(
            lambda tx: tx.one("SELECT (SELECT COUNT(*) FROM blobs), (SELECT COUNT(*) FROM blob_bodies)")
        )
        assert tuple(counts) == (20, 20)
    finally:
        await app.close_store(on_postgres)


async def test_a_body_that_does_not_match_its_hash_stops_the_move(tmp_path, pg_url):
    on_segments = await app.open_store(make_settings(tmp_path, pg_url), MemoryPublisher())
    await on_segments.create_domain("example.test")
    await on_segments.create_user("alice@example.test", "pw", None)
    await on_segments.deliver([DeliverItem(f"k{i}", "alice@example.test", body(i)) for i in range(3)])
    _, locators = await inbox(on_segments, "alice")
    await app.close_store(on_segments)
    seg, off, _ = (int(x) for x in locators[1].split(":"))
    path = tmp_path / "blobs" / f"seg-{seg:08d}.pack"
    data = bytearray(path.read_bytes())  # noqa: ASYNC240 (a test's few bytes)
    data[off + 5] ^= 1  # one bit of one body flipped
    path.write_bytes(bytes(data))  # noqa: ASYNC240

    settings = make_settings(tmp_path, pg_url, blobs="postgres")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        await move_bodies.main_async(settings)
    on_postgres = await app.open_store(settings, MemoryPublisher())
    try:
        left = await on_postgres.db.read(lambda tx: tx.all("SELECT locator FROM blobs ORDER BY id"))
        assert sorted(r[0] for r in left) == sorted(locators)  # the whole chunk stays in segments, untouched
        assert await on_postgres.db.read(lambda tx: tx.value("SELECT COUNT(*) FROM blob_bodies")) == 0
    finally:
        await app.close_store(on_postgres)
