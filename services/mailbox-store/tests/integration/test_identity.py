"""Identity (issue 12 items 1 and 6): ids are never reused, and a password change, disable or delete
revokes every session of the user at once (401 on the next access call, a UserRevoked event), on
SQLite and PostgreSQL. A user deleted and created again with the same address is a new identity."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailflow.errors import NotFound
from mailflow.store.api import DeliverItem
from mailflow.store.client import SessionExpired
from mailflow_mailbox_store import app
from tests.support.store import MemoryPublisher

from .conftest import message


async def add_user(admin, address: str, password: str) -> None:
    r = await admin.post("/admin/users", json={"address": address, "password": password})
    assert r.status_code == 201, r.text


async def deliver(client, rcpt: str, subject: str) -> None:
    [r] = await client.deliver([DeliverItem(f"k-{subject}-{time.monotonic_ns()}", rcpt, message(subject))])
    assert r.status == "stored", r


async def ids(service, table: str, user_id: int | None = None) -> list[int]:
    where = "" if user_id is None else f" WHERE user_id = {int(user_id)}"
    return await service.store.db.read(lambda tx: [r[0] for r in tx.all(f"SELECT id FROM {table}{where}")])


async def test_ids_of_deleted_rows_are_never_given_again(admin, client, domain, service):
    """create, delete, create: the new id is greater, for users, mailboxes, domains, aliases and blobs."""
    await add_user(admin, f"a@{domain}", "pw")
    a = await client.authenticate(f"a@{domain}", "pw")
    await deliver(client, f"a@{domain}", "only copy")
    a_boxes, blobs = await ids(service, "mailboxes", a.user_id), await ids(service, "blobs")
    # the newest user, with the newest mailboxes and the newest body
    assert (await admin.delete(f"/admin/users/a@{domain}")).status_code == 204
    await service.store.db.write(lambda tx: tx.run("DELETE FROM blobs WHERE refs <= 0"))
    await add_user(admin, f"b@{domain}", "pw")
    b = await client.authenticate(f"b@{domain}", "pw")
    assert b.user_id > a.user_id
    assert min(await ids(service, "mailboxes", b.user_id)) > max(a_boxes)
    await deliver(client, f"b@{domain}", "another copy")
    assert max(await ids(service, "blobs")) > max(blobs)

    box = await client.create_mailbox(b, "Projects")
    await client.delete_mailbox(b, "Projects")
    assert (await client.create_mailbox(b, "Projects")).id > box.id

    other = f"x{domain}"
    assert (await admin.post("/admin/domains", json={"name": other})).status_code == 201
    first = max(await ids(service, "domains"))
    assert (await admin.delete(f"/admin/domains/{other}")).status_code == 204
    assert (await admin.post("/admin/domains", json={"name": other})).status_code == 201
    assert max(await ids(service, "domains")) > first

    alias = {"address": f"al@{domain}", "targets": [f"b@{domain}"]}
    assert (await admin.post("/admin/aliases", json=alias)).status_code == 201
    first = max(await ids(service, "aliases"))
    assert (await admin.delete(f"/admin/aliases/al@{domain}")).status_code == 204
    assert (await admin.post("/admin/aliases", json=alias)).status_code == 201
    assert max(await ids(service, "aliases")) > first


async def test_deleted_user_recreated_with_the_same_address_is_a_new_identity(admin, client, domain, service):
    await add_user(admin, f"a@{domain}", "old-pw")
    old = await client.authenticate(f"a@{domain}", "old-pw")
    await deliver(client, f"a@{domain}", "for the old a")
    assert (await client.select(old, "INBOX")).uids == [1]
    assert (await admin.delete(f"/admin/users/a@{domain}")).status_code == 204
    assert [(e.user_id, e.generation, e.reason) for e in service.publisher.revocations] == [
        (old.user_id, None, "deleted")
    ]
    await add_user(admin, f"a@{domain}", "new-pw")
    await deliver(client, f"a@{domain}", "for the new a")
    new = await client.authenticate(f"a@{domain}", "new-pw")
    assert new.user_id > old.user_id
    inbox = (await client.status(new, "INBOX")).id
    with pytest.raises(SessionExpired):  # the old token never reaches the new user's mail
        await client.select(old, "INBOX")
    with pytest.raises(SessionExpired):
        await client.fetch_bodies(old, inbox, [1])
    assert await client.authenticate(f"a@{domain}", "old-pw") is None  # nor does the old password
    assert (await client.select(new, "INBOX")).uids == [1]
    assert await client.expired_sessions([old.token, new.token]) == {old.token}


async def test_password_change_revokes_every_session_at_once(admin, client, domain, service):
    await add_user(admin, f"a@{domain}", "old-pw")
    first = await client.authenticate(f"a@{domain}", "old-pw")
    second = await client.authenticate(f"a@{domain}", "old-pw")  # from the login cache: same generation
    assert (await client.select(first, "INBOX")).uids == []
    r = await admin.put(f"/admin/users/a@{domain}/password", json={"password": "new-pw"})
    assert r.status_code == 204
    for p in (first, second):
        with pytest.raises(SessionExpired):
            await client.select(p, "INBOX")
    assert await client.authenticate(f"a@{domain}", "old-pw") is None
    new = await client.authenticate(f"a@{domain}", "new-pw")
    assert new.generation > first.generation and (await client.select(new, "INBOX")).uids == []
    [event] = service.publisher.revocations
    assert (event.user_id, event.generation, event.reason) == (first.user_id, new.generation, "password")


async def test_disabled_user_cannot_log_in_but_still_receives_mail(admin, client, domain, service):
    await add_user(admin, f"a@{domain}", "pw")
    p = await client.authenticate(f"a@{domain}", "pw")
    assert (await admin.post(f"/admin/users/a@{domain}/disable")).status_code == 204
    assert (await admin.post(f"/admin/users/a@{domain}/disable")).status_code == 204  # already: no change
    assert (await admin.get(f"/admin/users/a@{domain}")).json()["disabled"] is True
    with pytest.raises(SessionExpired):
        await client.list_mailboxes(p)
    assert await client.authenticate(f"a@{domain}", "pw") is None
    await deliver(client, f"a@{domain}", "while disabled")
    [event] = service.publisher.revocations
    assert (event.user_id, event.reason) == (p.user_id, "disabled") and event.generation > p.generation
    assert (await admin.post(f"/admin/users/a@{domain}/enable")).status_code == 204
    assert (await admin.get(f"/admin/users/a@{domain}")).json()["disabled"] is False
    with pytest.raises(SessionExpired):  # a session from before the disable stays dead
        await client.list_mailboxes(p)
    again = await client.authenticate(f"a@{domain}", "pw")
    assert (await client.select(again, "INBOX")).uids == [1]
    assert (await admin.post(f"/admin/users/nobody@{domain}/disable")).status_code == 404


async def test_deleting_a_domain_revokes_its_users(admin, client, domain, service):
    await add_user(admin, f"a@{domain}", "pw")
    p = await client.authenticate(f"a@{domain}", "pw")
    assert (await admin.delete(f"/admin/domains/{domain}", params={"force": "true"})).status_code == 204
    assert [(e.user_id, e.reason) for e in service.publisher.revocations] == [(p.user_id, "deleted")]
    with pytest.raises(SessionExpired):
        await client.list_mailboxes(p)


async def test_another_store_process_refuses_a_revoked_token_within_a_second(
    admin, client, domain, service, module_db, tmp_path
):
    """Two store processes on one database: the one that did not make the change stops accepting
    the old token once its remembered generation is older than session_check_interval (1 s)."""
    from ..conftest import make_settings

    await add_user(admin, f"a@{domain}", "pw")
    p = await client.authenticate(f"a@{domain}", "pw")
    other = await app.open_store(make_settings(tmp_path, *module_db), MemoryPublisher())
    try:
        s = await other.session(p.token)
        assert s is not None and await other.list_mailboxes(s)  # remembered by `other` from now on
        r = await admin.put(f"/admin/users/a@{domain}/password", json={"password": "new"})
        assert r.status_code == 204
        changed = time.monotonic()
        while await other.session(p.token) is not None:
            assert time.monotonic() - changed < 1.5, "still accepted by the other process"
            await asyncio.sleep(0.02)
        with pytest.raises(NotFound):  # and the user's own calls never got past it meanwhile
            await other.status(s, "no such mailbox")
    finally:
        await app.close_store(other)


async def test_locality_is_decided_by_the_domain(client, domain, admin):
    """Issue 12 item 3: an address in a local domain whose local part the store cannot take is
    "unknown_user", never "not_local" (which would send the domain's mail to its public MX)."""
    assert await client.is_local_domain(domain) and await client.is_local_domain(domain.upper() + ".")
    assert not await client.is_local_domain("elsewhere.test")
    assert not await client.is_local_domain("not a domain")
    res = await client.resolve(f'"john doe"@{domain}')
    assert res.status == "unknown_user"
    assert (await client.resolve('"john doe"@elsewhere.test')).status == "not_local"
    [r] = await client.deliver([DeliverItem("odd", f'"john doe"@{domain}', message("odd"))])
    assert (r.status, r.permanent, r.detail) == ("unknown_user", True, "no such user")


async def test_concurrent_checks_of_one_password_share_one_argon2_run(service):
    store = service.store
    stored = store.passwords.hash("pw")
    calls, real = [], store.passwords.verify
    store.passwords.verify = lambda *a: calls.append(a) or real(*a)
    try:
        got = await asyncio.gather(*(store._verify("c@x.test", stored, "pw") for _ in range(5)))
        wrong = await asyncio.gather(*(store._verify("c@x.test", stored, "nope") for _ in range(3)))
    finally:
        del store.passwords.verify
    assert got == [(True, None)] * 5 and wrong == [(False, None)] * 3 and len(calls) == 2
