"""The store contract (mailflow.store.api) as the other services see it: the real mailbox-store through
StoreClient (tests/support/store.py), which is what imap-pop3's and delivery's protocol tests run on."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded
from mailflow.store import search as sk
from mailflow.store.api import DELETED, SEEN, DeliverItem

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: Hello there\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nbody text\r\n"


@pytest.fixture
def store(local_store):
    return local_store.fresh(("alice@example.test", "pw"), ("bob@example.test", "pw"))


async def login(s, who="alice@example.test"):
    p = await s.authenticate(who, "pw")
    assert p is not None
    return p


async def test_authenticate_and_resolve(store):
    assert await store.authenticate("alice@example.test", "wrong") is None
    assert await store.authenticate("nobody@example.test", "pw") is None
    assert (await login(store, "ALICE@example.test")).address == "alice@example.test"
    store.add_alias("sales@example.test", ["alice@example.test", "bob@example.test"])
    assert (await store.resolve("alice+tag@example.test")).users == ("alice@example.test",)
    assert (await store.resolve("sales@example.test")).users == ("alice@example.test", "bob@example.test")
    assert (await store.resolve("nobody@example.test")).status == "unknown_user"
    assert (await store.resolve("x@elsewhere.test")).status == "not_local"


async def test_uids_grow_and_are_never_reused_modseq_and_tombstones(store):
    p = await login(store)
    a = await store.append(p, "INBOX", MSG)
    b = await store.append(p, "INBOX", MSG, frozenset({DELETED}))
    sel = await store.select(p, "INBOX")
    assert sel.uids == [a.uid, b.uid] and a.uid < b.uid
    assert sel.status.uidvalidity == a.uidvalidity and sel.status.uidnext == b.uid + 1
    assert await store.expunge(p, sel.status.id) == [b.uid]
    c = await store.append(p, "INBOX", MSG)
    assert c.uid == b.uid + 1
    ch = await store.changes(p, sel.status.id, sel.status.highestmodseq)
    assert ch.expunged == [b.uid] and [m.uid for m in ch.updated] == [c.uid]
    res = await store.store_flags(p, sel.status.id, [a.uid], "add", frozenset({SEEN}))
    assert res.updated[0].flags == {SEEN} and res.updated[0].modseq > c.uid - c.uid
    ch2 = await store.changes(p, sel.status.id, ch.status.highestmodseq)
    assert [m.uid for m in ch2.updated] == [a.uid] and ch2.expunged == []
    # CONDSTORE: UNCHANGEDSINCE older than the message refuses it
    res = await store.store_flags(p, sel.status.id, [a.uid], "remove", frozenset({SEEN}), unchanged_since=1)
    assert res.modified == [a.uid] and res.updated == []


async def test_recent_is_claimed_once(store):
    p = await login(store)
    await store.append(p, "INBOX", MSG)
    assert (await store.status(p, "INBOX")).recent == 1
    first = await store.select(p, "INBOX")
    second = await store.select(p, "INBOX")
    assert len(first.recent) == 1 and second.recent == set()
    peek = await store.select(p, "INBOX", claim_recent=False)
    assert peek.recent == set()


async def test_users_never_see_each_other(store):
    alice, bob = await login(store), await login(store, "bob@example.test")
    await store.append(p := alice, "INBOX", MSG)
    inbox = (await store.select(p, "INBOX")).status.id
    with pytest.raises(NotFound):
        await store.fetch_bodies(bob, inbox, [1])
    with pytest.raises(NotFound):
        await store.changes(bob, inbox, 0)
    assert (await store.select(bob, "INBOX")).uids == []


async def test_folder_tree(store):
    p = await login(store)
    await store.create_mailbox(p, "a/b/c")
    names = {m.name for m in await store.list_mailboxes(p)}
    assert {"a", "a/b", "a/b/c", "INBOX", "Sent", "Trash"} <= names
    with pytest.raises(Conflict):
        await store.create_mailbox(p, "inbox")
    with pytest.raises(Invalid):
        await store.delete_mailbox(p, "INBOX")
    with pytest.raises(Invalid):
        await store.create_mailbox(p, "a//b")
    await store.delete_mailbox(p, "a/b")  # has a child: stays as \Noselect
    info = {m.name: m for m in await store.list_mailboxes(p)}
    assert not info["a/b"].selectable and info["a/b"].has_children
    with pytest.raises(NotFound):
        await store.select(p, "a/b")
    await store.rename_mailbox(p, "a", "z")
    names = {m.name for m in await store.list_mailboxes(p)}
    assert {"z", "z/b", "z/b/c"} <= names and "a" not in names
    with pytest.raises(Invalid):
        await store.rename_mailbox(p, "z", "z/q")


async def test_rename_inbox_moves_messages_and_keeps_inbox(store):
    p = await login(store)
    await store.append(p, "INBOX", MSG)
    await store.rename_mailbox(p, "INBOX", "Old")
    assert (await store.status(p, "INBOX")).messages == 0
    assert (await store.status(p, "Old")).messages == 1
    assert (await store.append(p, "INBOX", MSG)).uid == 2  # INBOX's UIDs are not reused


async def test_copy_move_and_quota(store):
    p = await login(store)
    a = await store.append(p, "INBOX", MSG, frozenset({SEEN}))
    inbox = (await store.select(p, "INBOX")).status.id
    cp = await store.copy(p, inbox, [a.uid, 99], "Archive")
    assert cp.source_uids == [a.uid] and len(cp.dest_uids) == 1
    assert (await store.select(p, "Archive")).flags == [frozenset({SEEN})]
    mv = await store.move(p, inbox, [a.uid], "Trash")
    assert mv.source_uids == [a.uid] and (await store.status(p, "INBOX")).messages == 0
    with pytest.raises(NotFound):
        await store.copy(p, inbox, [a.uid], "Nope")
    store.set_quota("alice@example.test", len(MSG) * 2 + 1)
    with pytest.raises(QuotaExceeded):
        await store.append(p, "INBOX", MSG)


async def test_search(store):
    p = await login(store)
    a = await store.append(p, "INBOX", MSG, internal_date=datetime(2025, 1, 5, 12, tzinfo=UTC))
    b = await store.append(p, "INBOX", MSG.replace(b"Hello", b"Bye"), frozenset({SEEN}))
    mb = (await store.select(p, "INBOX")).status.id

    async def find(key):
        return await store.search(p, mb, key)

    assert await find(sk.All()) == [a.uid, b.uid]
    assert await find(sk.Header("subject", "hello")) == [a.uid]
    assert await find(sk.Not(sk.Flag(SEEN))) == [a.uid]
    assert await find(sk.Text("body", "BODY TEXT")) == [a.uid, b.uid]
    assert await find(sk.Date("internal", "on", date(2025, 1, 5))) == [a.uid]
    assert await find(sk.Date("sent", "before", date(2026, 11, 28))) == [a.uid, b.uid]
    assert await find(sk.Or(sk.Uids(((b.uid, b.uid),)), sk.Size("larger", 10_000))) == [b.uid]


async def test_pop3_lock(store):
    p = await login(store)
    token = await store.pop3_lock(p)
    with pytest.raises(Conflict):
        await store.pop3_lock(await login(store))
    await store.pop3_unlock(p, token)
    await store.pop3_unlock(p, token)
    assert await store.pop3_lock(p)


async def test_deliver_is_idempotent_and_emits_events(store):
    events = []
    store.listeners.append(events.append)
    items = [
        DeliverItem(key="q1/alice@example.test", recipient="alice@example.test", body=MSG, queue_id="q1")
    ]
    assert [r.status for r in await store.deliver(items)] == ["stored"]
    assert [r.status for r in await store.deliver(items)] == ["duplicate"]
    assert [(e.kind, e.uids) for e in events] == [("appended", [1])]
    res = await store.deliver([DeliverItem(key="q2/x", recipient="nobody@example.test", body=MSG)])
    assert res[0].status == "unknown_user"
