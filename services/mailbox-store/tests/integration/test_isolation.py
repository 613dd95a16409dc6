"""Users never see each other's mail: another user's mailbox id or UID is simply NotFound, and a
session token is required, verified and bound to its user. Also the POP3 maildrop lock."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from mailflow.errors import Conflict, NotFound, ServiceUnavailable
from mailflow.store import search as s
from mailflow.store.client import SessionExpired, StoreClient

from .conftest import message


async def test_bob_cannot_touch_alice_mail_by_id(client, people):
    alice, bob = people
    await client.append(alice, "INBOX", message("secret"))
    mb = (await client.status(alice, "INBOX")).id
    await client.store_flags(alice, mb, [1], "add", frozenset({"\\Deleted"}))
    attempts = [
        client.fetch_bodies(bob, mb, [1]),
        client.fetch_parsed(bob, mb, [1]),
        client.fetch_meta(bob, mb, [1]),
        client.store_flags(bob, mb, [1], "add", frozenset({"\\Seen"})),
        client.copy(bob, mb, [1], "INBOX"),
        client.move(bob, mb, [1], "INBOX"),
        client.expunge(bob, mb),
        client.expunge(bob, mb, [1]),
        client.changes(bob, mb, 0),
        client.search(bob, mb, s.All()),
        client.claim_recent(bob, mb, 100),
        client.claim_recent(bob, mb, 100, claim=False),
    ]
    for call in attempts:
        with pytest.raises(NotFound):
            await call
    # Alice's message is untouched (still \\Recent), and Bob's own INBOX is not Alice's.
    assert (await client.status(alice, "INBOX")).recent == 1
    assert await client.fetch_bodies(alice, mb, [1]) == {1: message("secret")}
    assert (await client.select(alice, "INBOX")).flags == [{"\\Deleted"}]
    assert (await client.select(bob, "INBOX")).uids == []


async def test_a_forged_token_is_refused(client, people, service):
    alice, bob = people
    await client.append(alice, "INBOX", message("secret"))
    mb = (await client.status(alice, "INBOX")).id
    # Bob's token with Alice's user id in the principal does not help: the store reads the token only.
    disguised = dataclasses.replace(bob, user_id=alice.user_id, address=alice.address)
    with pytest.raises(NotFound):
        await client.fetch_bodies(disguised, mb, [1])
    payload, _, mac = bob.token.partition(".")
    forged = dataclasses.replace(bob, token=alice.token.partition(".")[0] + "." + mac)
    with pytest.raises(SessionExpired):
        await client.fetch_bodies(forged, mb, [1])
    with pytest.raises(SessionExpired):
        await client.status(dataclasses.replace(alice, token=""), "INBOX")
    async with httpx.AsyncClient(base_url=service.url) as raw:
        r = await raw.post(
            "/access/status", json={"name": "INBOX"}, headers={"Authorization": f"Bearer {alice.token}"}
        )  # no service token
        assert r.status_code == 401
    other = StoreClient(service.url, "not-the-service-token")
    with pytest.raises(ServiceUnavailable):
        await other.status(alice, "INBOX")
    await other.close()


async def test_pop3_lock(client, people):
    alice, bob = people
    first = await client.pop3_lock(alice)
    second_session = await client.authenticate(alice.address, "alice-pw")
    with pytest.raises(Conflict):
        await client.pop3_lock(second_session)
    assert await client.pop3_lock(alice) == first  # the holder may take it again
    await client.pop3_lock(bob)  # other users have their own maildrop
    await client.pop3_unlock(second_session, "not-the-token")  # a wrong token releases nothing
    with pytest.raises(Conflict):
        await client.pop3_lock(second_session)
    await client.pop3_unlock(alice, first)
    token = await client.pop3_lock(second_session)
    assert token != first


async def test_a_stale_pop3_lock_expires(client, people, service):
    alice, _ = people
    await client.pop3_lock(alice)
    await service.store.db.write(lambda tx: tx.run("UPDATE pop3_locks SET expires_at = 0"))
    other = await client.authenticate(alice.address, "alice-pw")
    assert await client.pop3_lock(other)


async def test_quota_and_deleted_use_are_each_users_own(client, people, admin, domain):
    alice, bob = people
    r = await admin.put(f"/admin/users/alice@{domain}/quota", json={"quota_bytes": 50_000})
    assert r.status_code == 204, r.text
    before = await client.quota(alice)
    assert before.limit_bytes == 50_000
    await client.append(alice, "INBOX", message("kept", body="k" * 3000))
    gone = await client.append(alice, "INBOX", message("gone", body="g" * 5000))
    mb = (await client.status(alice, "INBOX")).id
    await client.store_flags(alice, mb, [gone.uid], "add", frozenset({"\\Deleted"}))
    after = await client.quota(alice)
    assert after.messages == before.messages + 2 and after.used_bytes > before.used_bytes + 8000
    deleted = await client.deleted(alice, "INBOX")
    assert deleted.messages == 1 and 5000 < deleted.size < 6000
    # Bob's figures are his own: nothing of Alice's shows, and her mailbox names reach only his.
    assert (await client.deleted(bob, "INBOX")).messages == 0
    assert (await client.quota(bob)).used_bytes == 0
    with pytest.raises(NotFound):
        await client.deleted(bob, "Nothere")
