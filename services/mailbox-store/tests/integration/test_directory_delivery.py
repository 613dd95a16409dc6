"""Directory (resolve, authenticate) and Deliverer (deliver) through StoreClient and the real service."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from mailflow.errors import ServiceUnavailable
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient

from tests.support import free_port


def message(subject: str = "hello", size: int = 0) -> bytes:
    head = f"From: carol@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


@pytest.fixture
async def users(admin):
    await admin.post("/admin/domains", json={"name": "example.test"})
    await admin.post("/admin/domains", json={"name": "other.test"})
    for user, quota in (("alice", None), ("bob", None), ("tiny", 1000)):
        r = await admin.post(
            "/admin/users",
            json={"address": f"{user}@example.test", "password": f"{user}-pw", "quota_bytes": quota},
        )
        assert r.status_code == 201
    await admin.post(
        "/admin/aliases",
        json={"address": "team@example.test", "targets": ["alice@example.test", "bob@example.test"]},
    )
    await admin.post(
        "/admin/aliases", json={"address": "boss@example.test", "targets": ["team@example.test"]}
    )
    await admin.post("/admin/aliases", json={"address": "@other.test", "targets": ["bob@example.test"]})


async def inbox_rows(service, login: str):
    def q(tx):
        return tx.all(
            "SELECT m.uid, m.flags, m.size, m.internal_date, m.queue_id, b.refs FROM messages m"
            " JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id"
            " JOIN blobs b ON b.id = m.blob_id WHERE u.address = :a AND x.name = 'INBOX' ORDER BY m.uid",
            {"a": login},
        )

    return await service.store.db.read(q)


async def test_resolve(client, users):
    r = await client.resolve("alice@example.test")
    assert (r.status, r.users) == ("local", ("alice@example.test",))
    assert (await client.resolve("ALICE@Example.Test")).users == ("alice@example.test",)
    assert (await client.resolve("alice+news@example.test")).users == ("alice@example.test",)
    assert (await client.resolve("team@example.test")).users == ("alice@example.test", "bob@example.test")
    assert (await client.resolve("boss@example.test")).users == ("alice@example.test", "bob@example.test")
    assert (await client.resolve("anyone@other.test")).users == ("bob@example.test",)
    assert (await client.resolve("nobody@example.test")).status == "unknown_user"
    assert (await client.resolve("alice@elsewhere.test")).status == "not_local"
    assert (await client.resolve("not an address")).status == "not_local"


async def test_authenticate(client, users, admin):
    p = await client.authenticate("alice@example.test", "alice-pw")
    assert p is not None and p.address == "alice@example.test" and p.token
    assert await client.authenticate("alice@example.test", "wrong") is None
    assert await client.authenticate("nobody@example.test", "alice-pw") is None
    again = await client.authenticate("Alice@Example.test", "alice-pw")  # from the login cache
    assert again is not None and again.user_id == p.user_id and again.token != p.token
    await admin.put("/admin/users/alice@example.test/password", json={"password": "changed"})
    assert await client.authenticate("alice@example.test", "alice-pw") is None
    assert await client.authenticate("alice@example.test", "changed") is not None
    await admin.post("/admin/aliases", json={"address": "al@example.test", "targets": ["alice@example.test"]})
    p = await client.authenticate("alice@example.test", "changed")
    assert set(p.addresses) == {"alice@example.test", "al@example.test"}


async def test_deliver_is_durable_and_idempotent(client, users, service):
    when = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    items = [
        DeliverItem("Q1/alice@example.test", "alice@example.test", message("one"), queue_id="Q1", trace_id="T1"),
        DeliverItem("Q2/alice+x@example.test", "alice+x@example.test", message("two"), internal_date=when,
                    flags=("\\Seen",)),
        DeliverItem("Q3/nobody@example.test", "nobody@example.test", message("three")),
    ]  # fmt: skip
    results = await client.deliver(items)
    assert [r.status for r in results] == ["stored", "stored", "unknown_user"]
    assert results[0].users == ("alice@example.test",)
    rows = await inbox_rows(service, "alice@example.test")
    assert [r[0] for r in rows] == [1, 2]
    assert rows[1][1] == 1 and rows[1][3] == int(when.timestamp()) and rows[0][4] == "Q1"
    again = await client.deliver(items[:2])
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert len(await inbox_rows(service, "alice@example.test")) == 2
    assert [e.kind for e in service.publisher.events] == ["appended"]
    assert service.publisher.events[0].uids == [1, 2]
    assert [t.step for t in service.publisher.traces] == ["mailbox"]
    assert service.publisher.traces[0].queue_id == "Q1" and service.publisher.traces[0].trace_id == "T1"


async def test_alias_delivery_stores_one_body_for_many_users(client, users, service):
    raw = message("to the team")
    [r] = await client.deliver([DeliverItem("Q9/team@example.test", "team@example.test", raw)])
    assert r.status == "stored" and set(r.users) == {"alice@example.test", "bob@example.test"}
    a, b = await inbox_rows(service, "alice@example.test"), await inbox_rows(service, "bob@example.test")
    assert len(a) == len(b) == 1 and a[0][5] == 2  # one blob, two references
    [r] = await client.deliver([DeliverItem("Q9/team@example.test", "team@example.test", raw)])
    assert r.status == "duplicate"


async def test_quota(client, users, service, admin):
    r = await client.deliver([DeliverItem("Q1/tiny", "tiny@example.test", message("big", 2000))])
    assert r[0].status == "quota_exceeded" and r[0].permanent  # larger than the whole quota: never fits
    r = await client.deliver([DeliverItem("Q2/tiny", "tiny@example.test", message("a", 600))])
    assert r[0].status == "stored"
    r = await client.deliver([DeliverItem("Q3/tiny", "tiny@example.test", message("b", 600))])
    assert r[0].status == "quota_exceeded" and not r[0].permanent  # would fit once mail is deleted
    u = (await admin.get("/admin/users/tiny@example.test")).json()
    assert u["used_bytes"] == 600 and u["messages"] == 1


async def test_batch_with_the_same_key_twice_stores_once(client, users, service):
    raw = message("twice")
    items = [
        DeliverItem("K/alice", "alice@example.test", raw),
        DeliverItem("K/alice", "alice@example.test", raw),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored", "duplicate"]
    assert len(await inbox_rows(service, "alice@example.test")) == 1


async def test_deliver_into_a_named_mailbox_falls_back_to_inbox(client, users, service):
    items = [
        DeliverItem("A/alice", "alice@example.test", message("junk"), mailbox="Junk"),
        DeliverItem("B/alice", "alice@example.test", message("x"), mailbox="No/Such"),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored", "stored"]
    boxes = {e.mailbox for e in service.publisher.events}
    assert boxes == {"Junk", "INBOX"}


async def test_internal_calls_need_the_service_token(service, users):
    async with httpx.AsyncClient(base_url=service.url) as c:
        assert (await c.get("/internal/resolve", params={"address": "alice@example.test"})).status_code == 401
    bad = StoreClient(service.url, "wrong-token")
    with pytest.raises(ServiceUnavailable):
        await bad.resolve("alice@example.test")
    await bad.close()


async def test_a_store_that_does_not_answer_is_unavailable():
    c = StoreClient(f"http://127.0.0.1:{free_port()}", "x", timeout=2)
    with pytest.raises(ServiceUnavailable):
        await c.resolve("alice@example.test")
    with pytest.raises(ServiceUnavailable):
        await c.deliver([DeliverItem("k", "alice@example.test", b"x")])
    await c.close()
