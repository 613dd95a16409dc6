"""Bodies in PostgreSQL (MAILFLOW_STORE_BLOBS=postgres): a body is a row of blob_bodies exactly while a
message uses it. Stored once however many messages share it, read back by every path (fetch, sections,
SEARCH TEXT), gone in the transaction that removes its last reference, and never left behind by an
operation that failed or stored nothing. (The whole service suite also runs on this store: conftest's
"postgres-bodies".)"""

from __future__ import annotations

import hashlib
import os

import pydantic
import pytest

from mailflow.errors import NotFound, QuotaExceeded
from mailflow.store.api import DeliverItem
from mailflow.store.search import Text
from mailflow_mailbox_store import app, maintenance
from mailflow_mailbox_store.blobs import BlobMissing
from mailflow_mailbox_store.uidset import UidSet
from tests.support import postgres_schema
from tests.support.store import MemoryPublisher

from ..conftest import make_settings


@pytest.fixture
async def store(tmp_path):
    base = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
    with postgres_schema(base) as url:
        s = await app.open_store(make_settings(tmp_path, url, blobs="postgres"), MemoryPublisher())
        await s.create_domain("example.test")
        for user in ("alice", "bob"):
            await s.create_user(f"{user}@example.test", "pw", None)
        try:
            yield s
        finally:
            await app.close_store(s)


def body(subject: str, text: str = "nothing to see") -> bytes:
    return f"From: a@elsewhere.test\r\nSubject: {subject}\r\n\r\n{text}\r\n".encode()


async def count(store, table: str) -> int:
    return await store.db.read(lambda tx: tx.value(f"SELECT COUNT(*) FROM {table}"))


async def session(store, user: str):
    p = await store.authenticate(f"{user}@example.test", "pw")
    return await store.session(p.token)


async def test_a_body_is_a_row_while_a_message_uses_it(store):
    shared, own = body("shared", "the needle is here"), body("own")
    res = await store.deliver(
        [
            DeliverItem("k1", "alice@example.test", shared),
            DeliverItem("k2", "bob@example.test", shared),
            DeliverItem("k3", "alice@example.test", own),
        ]
    )
    assert [r.status for r in res] == ["stored"] * 3
    assert await count(store, "blob_bodies") == 2  # the shared body once
    locators = await store.db.read(lambda tx: {bytes(s): x for s, x in tx.all("SELECT sha256, locator FROM blobs")})
    assert all(x.startswith("pg:") for x in locators.values()), locators
    compression = await store.db.read(
        lambda tx: tx.value(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = 'blob_bodies'::regclass AND attname = 'body'"
        )
    )
    assert compression == "l"  # lz4 (migration 0006; this server has it)

    alice, bob = await session(store, "alice"), await session(store, "bob")
    mb = (await store.status(alice, "INBOX")).id
    got, data = await store.bodies(alice, mb, UidSet([(1, 2)]), 1 << 20)
    assert data == [shared, own]  # read in the same transaction
    assert await store.read_bodies([loc for _, loc, _ in got]) == [shared, own]
    assert await store.fetch_sections(alice, mb, UidSet([(1, 2)]), "HEADER.FIELDS (SUBJECT)") == [
        (1, b"Subject: shared\r\n\r\n"),
        (2, b"Subject: own\r\n\r\n"),
    ]
    assert await store.search(alice, mb, Text("body", "needle")) == [1]

    # alice's copy goes: bob's keeps the body
    await store.store_flags(alice, mb, UidSet([(1, 1)]), "add", ["\\Deleted"], None)
    assert await store.expunge(alice, mb, None) == [1]
    assert await store.db.write(maintenance.purge_blobs, store.blobs, exclusive=True) == 0
    assert await count(store, "blob_bodies") == 2
    # bob's goes too: the body goes with its blobs row, in the same transaction
    bob_mb = (await store.status(bob, "INBOX")).id
    await store.store_flags(bob, bob_mb, UidSet([(1, 1)]), "add", ["\\Deleted"], None)
    await store.expunge(bob, bob_mb, None)
    assert await store.db.write(maintenance.purge_blobs, store.blobs, exclusive=True) == 1
    assert await count(store, "blob_bodies") == 1
    with pytest.raises(BlobMissing):
        await store.read_bodies([locators[hashlib.sha256(shared).digest()]])
    assert await store.read_bodies([locators[hashlib.sha256(own).digest()]]) == [own]


async def test_a_body_nobody_took_is_not_kept(store):
    await store.deliver([DeliverItem("k1", "alice@example.test", body("first"))])
    assert await count(store, "blob_bodies") == 1
    alice = await session(store, "alice")
    with pytest.raises(NotFound):  # the operation fails after the writer stored its body
        await store.append(alice, "No such mailbox", [(body("lost"), [], None)])
    await store.set_quota("bob@example.test", 10)
    [r] = await store.deliver([DeliverItem("k2", "bob@example.test", body("too big for bob"))])
    assert r.status == "quota_exceeded"  # stored nothing: its body was not wanted
    with pytest.raises(QuotaExceeded):
        await store.append(await session(store, "bob"), "INBOX", [(body("again too big"), [], None)])
    [r] = await store.deliver([DeliverItem("k1", "alice@example.test", body("first, again"))])
    assert r.status == "duplicate"
    assert await count(store, "blob_bodies") == 1
    assert await count(store, "blobs") == 1


async def test_a_locator_of_another_store_is_missing_not_misread(store):
    with pytest.raises(BlobMissing, match="no PostgreSQL locator"):
        await store.read_bodies(["1:0:10"])  # a segment's
    with pytest.raises(BlobMissing, match="no such body"):
        await store.read_bodies(["pg:999999"])


def test_bodies_in_postgres_need_a_postgres_database(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="MAILFLOW_STORE_BLOBS=postgres needs a PostgreSQL"):
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", blobs="postgres")
    with pytest.raises(pydantic.ValidationError):
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", blobs="jetstream")
