"""Directory (resolve, authenticate) and Deliverer (deliver) through StoreClient and the real service."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio

from mailflow.errors import ServiceUnavailable
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient
from tests.support import free_port


def message(subject: str = "hello", size: int = 0) -> bytes:
    head = f"From: carol@elsewhere.test\r\nTo: someone@example.test\r\nSubject: {subject}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


class Names:
    """This test's addresses: alice, bob and tiny (1000-byte quota) in `d`; `o`'s catch-all goes to bob;
    aliases mixed (alice, carol), away (carol) and all (mixed, away, dave, bob) reach carol and dave
    in another domain."""

    def __init__(self, d: str):
        self.d, self.o = d, "o" + d
        self.alice, self.bob, self.tiny = f"alice@{d}", f"bob@{d}", f"tiny@{d}"
        self.carol, self.dave = "carol@naver.test", "dave@naver.test"  # elsewhere: aliases forward to them


@pytest_asyncio.fixture(loop_scope="module")
async def n(admin, domain):
    n = Names(domain)
    assert (await admin.post("/admin/domains", json={"name": n.o})).status_code == 201
    for user, quota in (("alice", None), ("bob", None), ("tiny", 1000)):
        body = {"address": f"{user}@{n.d}", "password": f"{user}-pw", "quota_bytes": quota}
        assert (await admin.post("/admin/users", json=body)).status_code == 201
    await admin.post("/admin/aliases", json={"address": f"team@{n.d}", "targets": [n.alice, n.bob]})
    await admin.post("/admin/aliases", json={"address": f"boss@{n.d}", "targets": [f"team@{n.d}"]})
    await admin.post("/admin/aliases", json={"address": f"@{n.o}", "targets": [n.bob]})
    await admin.post("/admin/aliases", json={"address": f"mixed@{n.d}", "targets": [n.alice, n.carol]})
    await admin.post("/admin/aliases", json={"address": f"away@{n.d}", "targets": [n.carol]})
    await admin.post("/admin/aliases", json={"address": f"all@{n.d}", "targets": [f"mixed@{n.d}", f"away@{n.d}", n.dave, n.bob]})
    return n


async def inbox_rows(service, login: str):
    def q(tx):
        return tx.all(
            "SELECT m.uid, m.flags, m.size, m.internal_date, m.queue_id, b.refs FROM messages m"
            " JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id"
            " JOIN blobs b ON b.id = m.blob_id WHERE u.address = :a AND x.name = 'INBOX' ORDER BY m.uid",
            {"a": login},
        )

    return await service.store.db.read(q)


async def test_resolve(client, n):
    r = await client.resolve(n.alice)
    assert (r.status, r.users) == ("local", (n.alice,))
    assert (await client.resolve(n.alice.upper())).users == (n.alice,)
    assert (await client.resolve(f"alice+news@{n.d}")).users == (n.alice,)
    assert (await client.resolve(f"team@{n.d}")).users == (n.alice, n.bob)
    assert (await client.resolve(f"boss@{n.d}")).users == (n.alice, n.bob)
    assert (await client.resolve(f"anyone@{n.o}")).users == (n.bob,)
    assert (await client.resolve(f"nobody@{n.d}")).status == "unknown_user"
    assert (await client.resolve("alice@elsewhere.test")).status == "not_local"
    assert (await client.resolve("not an address")).status == "not_local"


async def test_authenticate(client, n, admin):
    p = await client.authenticate(n.alice, "alice-pw")
    assert p is not None and p.address == n.alice and p.token
    assert await client.authenticate(n.alice, "wrong") is None
    assert await client.authenticate(f"nobody@{n.d}", "alice-pw") is None
    again = await client.authenticate(n.alice.upper(), "alice-pw")  # from the login cache
    assert again is not None and again.user_id == p.user_id and again.token != p.token
    await admin.put(f"/admin/users/{n.alice}/password", json={"password": "changed"})
    assert await client.authenticate(n.alice, "alice-pw") is None
    assert await client.authenticate(n.alice, "changed") is not None
    await admin.post("/admin/aliases", json={"address": f"al@{n.d}", "targets": [n.alice]})
    p = await client.authenticate(n.alice, "changed")
    assert set(p.addresses) == {n.alice, f"al@{n.d}"}


async def test_deliver_is_durable_and_idempotent(client, n, service):
    when = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    items = [
        DeliverItem(f"Q1/{n.alice}", n.alice, message("one"), queue_id="Q1", trace_id="T1"),
        DeliverItem(f"Q2/{n.alice}", f"alice+x@{n.d}", message("two"), internal_date=when, flags=("\\Seen",)),
        DeliverItem(f"Q3/{n.d}", f"nobody@{n.d}", message("three")),
    ]
    results = await client.deliver(items)
    assert [r.status for r in results] == ["stored", "stored", "unknown_user"]
    assert results[0].users == (n.alice,)
    rows = await inbox_rows(service, n.alice)
    assert [r[0] for r in rows] == [1, 2]
    assert rows[1][1] == 1 and rows[1][3] == int(when.timestamp()) and rows[0][4] == "Q1"
    again = await client.deliver(items[:2])
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert len(await inbox_rows(service, n.alice)) == 2
    assert [e.kind for e in service.publisher.events] == ["appended"]
    assert service.publisher.events[0].uids == [1, 2]
    # the event says everything a session needs to show the two messages: flags, MODSEQ before and after
    ev = service.publisher.events[0]
    assert ev.flags == [[], ["\\Seen"]] and ev.since == ev.modseq - 1
    assert [t.step for t in service.publisher.traces] == ["mailbox"]
    assert service.publisher.traces[0].queue_id == "Q1" and service.publisher.traces[0].trace_id == "T1"


async def test_each_item_keeps_its_keywords_in_one_write_group(client, n, service):
    """Two messages for one user in one call, each with a keyword the user never had: both kept (the
    group's keyword table used to be loaded for the user's first item only)."""
    items = [
        DeliverItem(f"KW1/{n.bob}", n.bob, message("first"), flags=("$One",)),
        DeliverItem(f"KW2/{n.bob}", n.bob, message("second"), flags=("$Two", "\\Flagged")),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored", "stored"]
    bob = await client.authenticate(n.bob, "bob-pw")
    sel = await client.select(bob, "INBOX")
    metas = await client.fetch_meta(bob, sel.status.id, list(sel.uids)[-2:])
    assert [sorted(m.flags) for m in metas] == [["$One"], ["$Two", "\\Flagged"]]
    assert service.publisher.events[-1].flags == [["$One"], ["$Two", "\\Flagged"]]


async def test_alias_delivery_stores_one_body_for_many_users(client, n, service):
    raw = message(f"to the team of {n.d}")
    [r] = await client.deliver([DeliverItem(f"Q9/team@{n.d}", f"team@{n.d}", raw)])
    assert r.status == "stored" and set(r.users) == {n.alice, n.bob}
    a, b = await inbox_rows(service, n.alice), await inbox_rows(service, n.bob)
    assert len(a) == len(b) == 1 and a[0][5] == 2  # one blob, two references
    [r] = await client.deliver([DeliverItem(f"Q9/team@{n.d}", f"team@{n.d}", raw)])
    assert r.status == "duplicate"


async def test_resolve_forwards(client, n):
    r = await client.resolve(f"mixed@{n.d}")
    assert (r.status, r.users, r.forward) == ("local", (n.alice,), (n.carol,))
    r = await client.resolve(f"away+tag@{n.d}")
    assert (r.status, r.users, r.forward) == ("local", (), (n.carol,))
    r = await client.resolve(f"all@{n.d}")  # each once, in the order the aliases name them
    assert (r.users, r.forward) == ((n.alice, n.bob), (n.carol, n.dave))
    assert (await client.resolve(n.alice)).forward == ()


async def test_the_store_delivers_only_to_local_users_of_a_forwarding_alias(client, n, service):
    raw = message("forwarded")
    mixed, away = await client.deliver(
        [DeliverItem(f"QF/mixed@{n.d}", f"mixed@{n.d}", raw), DeliverItem(f"QF/away@{n.d}", f"away@{n.d}", raw)]
    )
    assert (mixed.status, mixed.users) == ("stored", (n.alice,))
    # smtp-ingress queues no job for an alias with no local user; one that comes anyway is refused
    assert (away.status, away.permanent, away.detail) == ("unknown_user", True, "no local user (forwarded only)")


async def test_quota(client, n, admin):
    r = await client.deliver([DeliverItem("Q1/tiny", n.tiny, message("big", 2000))])
    assert r[0].status == "quota_exceeded" and r[0].permanent  # larger than the whole quota: never fits
    r = await client.deliver([DeliverItem("Q2/tiny", n.tiny, message("a", 600))])
    assert r[0].status == "stored"
    r = await client.deliver([DeliverItem("Q3/tiny", n.tiny, message("b", 600))])
    assert r[0].status == "quota_exceeded" and not r[0].permanent  # would fit once mail is deleted
    u = (await admin.get(f"/admin/users/{n.tiny}")).json()
    assert u["used_bytes"] == 600 and u["messages"] == 1


async def test_batch_with_the_same_key_twice_stores_once(client, n, service):
    raw = message("twice")
    items = [DeliverItem("K/alice", n.alice, raw), DeliverItem("K/alice", n.alice, raw)]
    assert [r.status for r in await client.deliver(items)] == ["stored", "duplicate"]
    assert len(await inbox_rows(service, n.alice)) == 1


async def test_deliver_into_a_named_mailbox_falls_back_to_inbox(client, n, service):
    items = [
        DeliverItem("A/alice", n.alice, message("junk"), mailbox="Junk"),
        DeliverItem("B/alice", n.alice, message("x"), mailbox="No/Such"),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored", "stored"]
    assert {e.mailbox for e in service.publisher.events} == {"Junk", "INBOX"}


async def placed(service, login: str) -> list[tuple[str, str | None]]:
    """(mailbox, its special use) of each of the user's messages, sorted."""

    def q(tx):
        return tx.all(
            "SELECT x.name, x.special_use FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id"
            " JOIN users u ON u.id = x.user_id WHERE u.address = :a",
            {"a": login},
        )

    return sorted(tuple(r) for r in await service.store.db.read(q))


async def test_junk_goes_to_each_users_junk_mailbox_made_if_missing(client, n, service):
    """DMARC p=quarantine: every user an address reaches gets the message in their \\Junk mailbox,
    whatever it is called; a user without one gets "Junk" made (with \\Junk, and an event saying so)."""
    alice = await client.authenticate(n.alice, "alice-pw")
    bob = await client.authenticate(n.bob, "bob-pw")
    await client.rename_mailbox(alice, "Junk", "Spam")
    await client.delete_mailbox(bob, "Junk")
    service.publisher.events.clear()
    items = [
        DeliverItem(f"J1/team@{n.d}", f"team@{n.d}", message("forged"), junk=True),
        DeliverItem(f"J2/{n.bob}", n.bob, message("fine")),
        DeliverItem(f"J3/{n.bob}", n.bob, message("forged again"), junk=True, mailbox="Archive"),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored", "stored", "stored"]
    assert await placed(service, n.alice) == [("Spam", "\\Junk")]
    assert await placed(service, n.bob) == [("INBOX", None), ("Junk", "\\Junk"), ("Junk", "\\Junk")]
    made = [(e.kind, e.mailbox) for e in service.publisher.events if e.kind == "mailbox_created"]
    assert made == [("mailbox_created", "Junk")]
    assert "Junk" in {m.name for m in await client.list_mailboxes(bob) if m.special_use == "\\Junk"}


async def test_internal_calls_need_the_service_token(service, n):
    async with httpx.AsyncClient(base_url=service.url) as c:
        assert (await c.get("/internal/resolve", params={"address": n.alice})).status_code == 401
    bad = StoreClient(service.url, "wrong-token")
    with pytest.raises(ServiceUnavailable):
        await bad.resolve(n.alice)
    await bad.close()


async def test_a_deliver_frame_that_breaks_the_contract_is_refused_and_nothing_is_stored(service, n):
    """The frame's header is a DeliverRequest (mailflow.contracts.rest): anything else is a 422."""
    from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
    from mailflow.store import wire

    from ..conftest import SERVICE_TOKEN

    broken = [
        ({"items": [{"recipient": n.alice}]}, [b"x"]),  # no idempotency key
        ({"items": [{"key": "k1", "recipient": n.alice}]}, []),  # a body short
        ({"items": [{"key": "k2", "recipient": n.alice, "flags": "\\Seen"}]}, [b"x"]),  # flags not a list
        ({"items": [{"key": "k3", "recipient": n.alice, "internal_date": "yesterday"}]}, [b"x"]),
        ({"deliveries": []}, []),
    ]
    headers = {SERVICE_TOKEN_HEADER: SERVICE_TOKEN, "Content-Type": wire.CONTENT_TYPE}
    async with httpx.AsyncClient(base_url=service.url, headers=headers) as c:
        for head, parts in broken:
            r = await c.post("/internal/deliver", content=wire.encode(head, parts))
            assert r.status_code == 422 and r.json()["detail"].startswith("bad deliver frame"), head
    assert await inbox_rows(service, n.alice) == []


async def test_a_store_that_does_not_answer_is_unavailable():
    c = StoreClient(f"http://127.0.0.1:{free_port()}", "x", timeout=2)
    with pytest.raises(ServiceUnavailable):
        await c.resolve("alice@example.test")
    with pytest.raises(ServiceUnavailable):
        await c.deliver([DeliverItem("k", "alice@example.test", b"x")])
    await c.close()


async def test_concurrent_deliveries_merge_and_each_caller_gets_its_own_answer(client, n, service):
    import asyncio

    from mailflow_mailbox_store import metrics

    before = metrics.MERGED_OPS._value.get()
    rcpts = [n.alice, n.bob, n.tiny, f"nobody@{n.d}"]
    calls = []
    for i in range(40):
        rcpt = rcpts[i % 4]
        raw = message(f"m{i}", 2000 if rcpt == n.tiny else 0)
        calls.append(client.deliver([DeliverItem(f"M{i}", rcpt, raw), DeliverItem(f"M{i}", rcpt, raw)]))
    results = await asyncio.gather(*calls)
    expected = [("stored", "duplicate")] * 2 + [("quota_exceeded",) * 2, ("unknown_user",) * 2]
    for i, (first, second) in enumerate(results):
        assert (first.key, second.key) == (f"M{i}", f"M{i}")
        assert (first.status, second.status) == expected[i % 4]
    assert [r[0] for r in await inbox_rows(service, n.alice)] == list(range(1, 11))
    assert metrics.MERGED_OPS._value.get() > before  # 30 calls reached the writer at once: some merged
