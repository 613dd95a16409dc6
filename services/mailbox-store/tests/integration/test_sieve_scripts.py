"""Sieve scripts in the store: one user's named scripts, at most one active, bounded size and count, and
the active one for delivery. One user never sees or touches another's scripts."""

from __future__ import annotations

import pytest

from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded

SCRIPT = b'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "X"; }\r\n'


async def test_put_list_activate_get_rename_delete(client, people):
    alice, _ = people
    assert await client.list_scripts(alice) == []
    await client.put_script(alice, "main", SCRIPT)
    await client.put_script(alice, "other", b"keep;\r\n")
    assert await client.list_scripts(alice) == [("main", False), ("other", False)]
    assert await client.active_script(alice.address) is None
    await client.set_active(alice, "main")
    assert await client.list_scripts(alice) == [("main", True), ("other", False)]
    active = await client.active_script(alice.address)
    assert (active.name, active.script) == ("main", SCRIPT)
    assert "INBOX" in active.mailboxes and "Sent" in active.mailboxes
    assert active.others == ()  # it includes nothing: the other scripts stay home
    await client.put_script(alice, "inc", b'require "include"; include "other";')
    await client.set_active(alice, "inc")
    assert dict((await client.active_script(alice.address)).others) == {"main": SCRIPT, "other": b"keep;\r\n"}
    await client.set_active(alice, "main")
    await client.delete_script(alice, "inc")
    await client.set_active(alice, "other")  # one active at a time
    assert await client.list_scripts(alice) == [("main", False), ("other", True)]
    await client.put_script(alice, "other", b"discard;\r\n")  # replacing keeps it active
    assert (await client.active_script(alice.address)).script == b"discard;\r\n"
    with pytest.raises(Conflict):
        await client.delete_script(alice, "other")  # RFC 5804 §2.10: not the active one
    with pytest.raises(Conflict):
        await client.rename_script(alice, "main", "other")
    await client.rename_script(alice, "other", "renamed")  # the active one stays active
    assert await client.list_scripts(alice) == [("main", False), ("renamed", True)]
    await client.set_active(alice, "")
    assert await client.active_script(alice.address) is None
    await client.delete_script(alice, "renamed")
    assert await client.get_script(alice, "main") == SCRIPT
    with pytest.raises(NotFound):
        await client.get_script(alice, "renamed")
    with pytest.raises(NotFound):
        await client.set_active(alice, "renamed")
    with pytest.raises(Invalid):
        await client.put_script(alice, "bad\nname", SCRIPT)
    with pytest.raises(Invalid):
        await client.put_script(alice, "", SCRIPT)


async def test_size_and_count_are_bounded(client, people, service):
    alice, _ = people
    max_bytes, max_count = service.store.sieve_limits
    with pytest.raises(QuotaExceeded, match="^maxsize:"):
        await client.put_script(alice, "big", b"#" * (max_bytes + 1))
    with pytest.raises(QuotaExceeded, match="^maxsize:"):
        await client.have_space(alice, "big", max_bytes + 1)
    await client.have_space(alice, "big", max_bytes)
    for i in range(max_count):
        await client.put_script(alice, f"s{i:03}", b"keep;")
    with pytest.raises(QuotaExceeded, match="^maxscripts:"):
        await client.put_script(alice, "one-more", b"keep;")
    with pytest.raises(QuotaExceeded, match="^maxscripts:"):
        await client.have_space(alice, "one-more", 5)
    await client.put_script(alice, "s000", b"discard;")  # replacing one is not a new one
    await client.have_space(alice, "s001", 5)
    assert len(await client.list_scripts(alice)) == max_count


async def test_one_user_never_sees_anothers_scripts(client, people):
    alice, bob = people
    await client.put_script(alice, "secret", SCRIPT)
    await client.set_active(alice, "secret")
    assert await client.list_scripts(bob) == []
    for call in (
        client.get_script(bob, "secret"),
        client.set_active(bob, "secret"),
        client.delete_script(bob, "secret"),
        client.rename_script(bob, "secret", "mine"),
    ):
        with pytest.raises(NotFound):
            await call
    await client.put_script(bob, "secret", b"keep;")  # Bob's own script of the same name
    assert await client.get_script(alice, "secret") == SCRIPT
    assert await client.get_script(bob, "secret") == b"keep;"
    assert await client.active_script(bob.address) is None
    assert (await client.active_script(alice.address)).script == SCRIPT
    assert await client.list_scripts(alice) == [("secret", True)]


async def test_deleting_a_user_deletes_their_scripts(client, people, admin, domain):
    alice, _ = people
    await client.put_script(alice, "main", SCRIPT)
    await client.set_active(alice, "main")
    r = await admin.delete(f"/admin/users/{alice.address}")
    assert r.status_code in (200, 204), r.text
    with pytest.raises(NotFound):
        await client.active_script(alice.address)


async def test_deliver_makes_a_missing_mailbox_only_when_asked(client, people, domain):
    from mailflow.store.api import DeliverItem

    from .conftest import message

    alice, _ = people
    items = [
        DeliverItem(key="k-no", recipient=alice.address, body=message("a"), mailbox="Filed/Away"),
        DeliverItem(key="k-yes", recipient=alice.address, body=message("b"), mailbox="Filed/Here", create=True),
        DeliverItem(key="k-bad", recipient=alice.address, body=message("c"), mailbox="Bad\x00Name", create=True),
    ]
    assert [r.status for r in await client.deliver(items)] == ["stored"] * 3
    names = [m.name for m in await client.list_mailboxes(alice)]
    assert "Filed/Here" in names and "Filed/Away" not in names
    assert (await client.status(alice, "Filed/Here")).messages == 1
    assert (await client.status(alice, "INBOX")).messages == 2  # the missing one, and the bad name


async def test_vacation_memory_per_user_and_key(client, people, service):
    alice, bob = people
    key, other = "a" * 64, "b" * 64
    assert await client.vacation_due(alice.address, key, 7) is True
    assert await client.vacation_due(alice.address, key, 7) is False  # within its days
    assert await client.vacation_due(alice.address, other, 7) is True  # another sender or handle
    assert await client.vacation_due(bob.address, key, 7) is True  # another user
    from mailflow_mailbox_store import maintenance, scripts

    db = service.store.db
    later = int(__import__("time").time()) + 8 * 86_400
    assert await db.write(scripts.vacation_due, alice.address, key, 7, later) is True  # its days are over
    assert await db.write(maintenance.purge_vacation, later + 30 * 86_400) >= 3
