"""Mailboxes (the folder side of the access API) through StoreClient: list, create, delete, rename,
subscribe, status, select and \\Recent, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from mailflow.errors import Conflict, Invalid, NotFound

from .conftest import message


async def names(client, p):
    return [(b.name, b.selectable) for b in await client.list_mailboxes(p)]


async def test_a_new_user_has_the_special_use_mailboxes(client, people):
    alice, _ = people
    boxes = await client.list_mailboxes(alice)
    assert [(b.name, b.special_use, b.subscribed) for b in boxes] == [
        ("INBOX", None, True),
        ("Archive", "\\Archive", True),
        ("Drafts", "\\Drafts", True),
        ("Junk", "\\Junk", True),
        ("Sent", "\\Sent", True),
        ("Trash", "\\Trash", True),
    ]


async def test_create_makes_parents_and_refuses_duplicates(client, people):
    alice, _ = people
    info = await client.create_mailbox(alice, "Lists/Python/Announce")
    assert info.name == "Lists/Python/Announce" and info.selectable
    got = dict(await names(client, alice))
    assert got["Lists"] and got["Lists/Python"]
    with pytest.raises(Conflict):
        await client.create_mailbox(alice, "Lists/Python")
    with pytest.raises(Conflict):
        await client.create_mailbox(alice, "inbox")
    for bad in ("", "/x", "x/", "a//b", "a*b", "tab\there"):
        with pytest.raises(Invalid):
            await client.create_mailbox(alice, bad)
    info = await client.create_mailbox(alice, "Receipts", special_use="\\Archive")
    assert info.special_use == "\\Archive"
    boxes = {b.name: b for b in await client.list_mailboxes(alice)}
    assert boxes["Lists"].has_children and not boxes["Lists/Python/Announce"].has_children
    assert await client.status(alice, "INBOX/") if False else True


async def test_inbox_is_case_insensitive(client, people):
    alice, _ = people
    await client.append(alice, "inbox", message())
    assert (await client.status(alice, "InBoX")).messages == 1
    await client.create_mailbox(alice, "inbox/sub")
    assert "INBOX/sub" in dict(await names(client, alice))


async def test_delete(client, people):
    alice, _ = people
    with pytest.raises(Invalid):
        await client.delete_mailbox(alice, "INBOX")
    with pytest.raises(NotFound):
        await client.delete_mailbox(alice, "Nope")
    await client.create_mailbox(alice, "Work/2026")
    await client.append(alice, "Work", message("in work"))
    await client.delete_mailbox(alice, "Work")  # has a child: emptied and left \Noselect
    assert dict(await names(client, alice))["Work"] is False
    with pytest.raises(NotFound):
        await client.status(alice, "Work")
    with pytest.raises(Invalid):
        await client.delete_mailbox(alice, "Work")
    await client.delete_mailbox(alice, "Work/2026")
    await client.delete_mailbox(alice, "Work")
    assert "Work" not in dict(await names(client, alice))


async def test_uidvalidity_of_a_recreated_mailbox_is_new(client, people):
    alice, _ = people
    await client.create_mailbox(alice, "Again")
    first = await client.status(alice, "Again")
    await client.delete_mailbox(alice, "Again")
    await client.create_mailbox(alice, "Again")
    second = await client.status(alice, "Again")
    assert second.uidvalidity > first.uidvalidity


async def test_rename_moves_children_and_subscriptions(client, people):
    alice, _ = people
    await client.create_mailbox(alice, "Old/Child")
    await client.subscribe(alice, "Old/Child", True)
    await client.append(alice, "Old/Child", message("kept"))
    before = await client.status(alice, "Old/Child")
    await client.rename_mailbox(alice, "Old", "New/Place")
    got = dict(await names(client, alice))
    assert "Old" not in got and "Old/Child" not in got and got["New/Place/Child"] and got["New"]
    after = await client.status(alice, "New/Place/Child")
    assert (after.messages, after.uidvalidity) == (1, before.uidvalidity)
    boxes = {b.name: b for b in await client.list_mailboxes(alice)}
    assert boxes["New/Place/Child"].subscribed
    with pytest.raises(Conflict):
        await client.rename_mailbox(alice, "Sent", "Drafts")
    with pytest.raises(NotFound):
        await client.rename_mailbox(alice, "Nope", "Other")
    with pytest.raises(Invalid):
        await client.rename_mailbox(alice, "New", "New/Inside")


async def test_rename_inbox_moves_its_messages(client, people):
    alice, _ = people
    for i in range(3):
        await client.append(alice, "INBOX", message(f"m{i}"))
    inbox = await client.status(alice, "INBOX")
    await client.rename_mailbox(alice, "INBOX", "Old Mail")
    moved = await client.status(alice, "Old Mail")
    now = await client.status(alice, "INBOX")
    assert moved.messages == 3 and now.messages == 0
    assert now.uidvalidity == inbox.uidvalidity and now.uidnext == inbox.uidnext


async def test_subscribe(client, people):
    alice, _ = people
    await client.create_mailbox(alice, "Lists")
    boxes = {b.name: b for b in await client.list_mailboxes(alice)}
    assert not boxes["Lists"].subscribed
    await client.subscribe(alice, "Lists", True)
    await client.subscribe(alice, "Lists", True)
    assert {b.name: b for b in await client.list_mailboxes(alice)}["Lists"].subscribed
    await client.subscribe(alice, "Lists", False)
    assert not {b.name: b for b in await client.list_mailboxes(alice)}["Lists"].subscribed
    with pytest.raises(NotFound):
        await client.subscribe(alice, "Nope", True)


async def test_subscriptions_outlive_their_mailboxes(client, people, service):
    """RFC 3501 §6.3.6: DELETE leaves the subscription; LIST (SUBSCRIBED) shows it \\NonExistent."""
    alice, bob = people
    await client.create_mailbox(alice, "Gone/Deep")
    await client.subscribe(alice, "Gone/Deep", True)
    await client.delete_mailbox(alice, "Gone/Deep")
    await client.delete_mailbox(alice, "Gone")
    assert "Gone/Deep" in await client.subscriptions(alice)
    assert "Gone/Deep" not in [b.name for b in await client.list_mailboxes(alice)]
    assert "Gone/Deep" not in await client.subscriptions(bob)  # per user
    subs = await client.subscriptions(alice)
    assert subs == sorted(subs) and {"INBOX", "Sent", "Trash"} <= set(subs)
    await client.subscribe(alice, "Gone/Deep", False)  # a name with no mailbox can be unsubscribed
    assert "Gone/Deep" not in await client.subscriptions(alice)


async def test_save_dates_are_when_a_message_came_into_its_mailbox(client, people, service):
    """RFC 8514: APPEND, COPY and MOVE save anew (the internal date stays); rows from before migration
    0010 have none (None: NIL)."""
    alice, _ = people
    old = datetime(2001, 2, 3, tzinfo=UTC)
    before = int(time.time())
    uid = (await client.append(alice, "INBOX", message("a"), internal_date=old)).uid
    inbox = (await client.status(alice, "INBOX")).id
    saved = (await client.fetch_save_dates(alice, inbox, [uid]))[uid]
    assert before <= saved.timestamp() <= time.time() + 1
    sql = "UPDATE messages SET saved_at = NULL WHERE mailbox_id = :m"
    await service.store.db.write(lambda tx: tx.run(sql, {"m": inbox}))
    assert await client.fetch_save_dates(alice, inbox, [uid, uid + 5]) == {uid: None}  # unknown UIDs absent
    copied = await client.copy(alice, inbox, [uid], "Trash")
    moved = await client.move(alice, inbox, [uid], "Archive")
    for name, res in (("Trash", copied), ("Archive", moved)):
        mid = (await client.status(alice, name)).id
        [(u, at)] = (await client.fetch_save_dates(alice, mid, res.dest_uids)).items()
        assert before <= at.timestamp() <= time.time() + 1
        [meta] = await client.fetch_meta(alice, mid, [u])
        assert meta.internal_date == old
    assert await client.fetch_save_dates(alice, inbox, []) == {}


async def test_status_and_select(client, people):
    alice, _ = people
    for i in range(4):
        await client.append(
            alice, "INBOX", message(f"m{i}"), flags=frozenset({"\\Seen"}) if i < 1 else frozenset()
        )
    st = await client.status(alice, "INBOX")
    assert (st.messages, st.unseen, st.recent, st.uidnext) == (4, 3, 4, 5)
    assert st.size == sum(len(message(f"m{i}")) for i in range(4))
    assert st.highestmodseq > 1
    sel = await client.select(alice, "INBOX")
    assert sel.uids == [1, 2, 3, 4] and sel.flags[0] == {"\\Seen"} and sel.flags[1] == frozenset()
    assert sel.recent == {1, 2, 3, 4} and len(sel.modseqs) == 4
    assert sel.status.messages == 4 and sel.status.uidvalidity == st.uidvalidity
    again = await client.select(alice, "INBOX")
    assert again.recent == set() and again.status.recent == 0  # the first session claimed them
    await client.append(alice, "INBOX", message("new"))
    examine = await client.select(alice, "INBOX", claim_recent=False)
    assert examine.recent == {5} and examine.status.recent == 1  # EXAMINE sees it and leaves it
    third = await client.select(alice, "INBOX")
    assert third.recent == {5} and third.status.recent == 1
    with pytest.raises(NotFound):
        await client.select(alice, "Nope")
    empty = await client.select(alice, "Trash")
    assert empty.uids == [] and empty.status.messages == 0 and empty.permanent_keywords


async def test_kept_listings_stay_exact_through_every_kind_of_change(client, people, service):
    alice, _ = people
    for i in range(30):
        await client.append(alice, "INBOX", message(f"m{i}"))
    await client.create_mailbox(alice, "Other")
    for i in range(3):
        await client.append(alice, "Other", message(f"o{i}"))
    mb = (await client.status(alice, "INBOX")).id
    other = (await client.status(alice, "Other")).id

    async def check():
        kept = await client.select(alice, "INBOX", claim_recent=False)
        service.store.listings._items.clear()
        fresh = await client.select(alice, "INBOX", claim_recent=False)
        assert (kept.uids, kept.flags, kept.modseqs) == (fresh.uids, fresh.flags, fresh.modseqs)
        assert kept.status == fresh.status

    await check()
    await client.select(alice, "INBOX", claim_recent=False)  # kept again
    steps = [
        lambda: client.store_flags(alice, mb, [1, 5, 9], "add", frozenset({"\\Seen", "$Work"})),
        lambda: client.append(alice, "INBOX", message("new one")),
        lambda: client.store_flags(alice, mb, list(range(1, 31, 2)), "add", frozenset({"\\Deleted"})),
        lambda: client.expunge(alice, mb, [1, 3, 5, 7]),
        lambda: client.copy(alice, other, [1, 2, 3], "INBOX"),
        lambda: client.move(alice, mb, [10, 12], "Other"),
        lambda: client.store_flags(alice, mb, [2, 4, 6], "replace", frozenset({"$Other", "\\Flagged"})),
        lambda: client.expunge(alice, mb),
    ]
    from mailflow_mailbox_store import metrics

    refreshed = metrics.LISTINGS.labels("refreshed")._value.get()
    for step in steps:
        await step()
        await check()
        await client.select(alice, "INBOX", claim_recent=False)  # keep the fresh one for the next step
    assert metrics.LISTINGS.labels("refreshed")._value.get() - refreshed == len(steps)
