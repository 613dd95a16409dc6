"""Many callers at once: concurrent deliveries, APPENDs and COPYs into one mailbox never share or
reuse a UID; sessions working on one mailbox see one consistent history (MODSEQ order)."""

from __future__ import annotations

import asyncio

from mailflow.store.api import DeliverItem

from .conftest import message


async def test_concurrent_writers_never_reuse_a_uid(client, people):
    alice, _ = people
    await client.create_mailbox(alice, "Source")
    for i in range(5):
        await client.append(alice, "Source", message(f"s{i}"))
    src = (await client.status(alice, "Source")).id

    async def deliveries(n):
        for i in range(10):
            items = [DeliverItem(f"D{n}.{i}.{k}", alice.address, message(f"d{n}{i}{k}")) for k in range(3)]
            assert {r.status for r in await client.deliver(items)} == {"stored"}

    async def appends(n):
        return [(await client.append(alice, "INBOX", message(f"a{n}{i}"))).uid for i in range(10)]

    async def copies():
        out = []
        for _ in range(5):
            out += (await client.copy(alice, src, [1, 2, 3, 4, 5], "INBOX")).dest_uids
        return out

    results = await asyncio.gather(
        *(deliveries(n) for n in range(4)), *(appends(n) for n in range(4)), copies()
    )
    appended = [u for r in results[4:8] for u in r]
    copied = results[8]
    sel = await client.select(alice, "INBOX")
    total = 4 * 30 + 4 * 10 + 25
    assert len(sel.uids) == total and sel.uids == sorted(set(sel.uids))
    assert sel.uids == list(range(1, total + 1))  # dense: nothing lost, nothing doubled
    assert set(appended) | set(copied) <= set(sel.uids)
    assert sel.status.uidnext == total + 1
    # expunge everything, then write again: UIDs keep growing
    await client.store_flags(alice, sel.status.id, sel.uids, "add", frozenset({"\\Deleted"}))
    assert len(await client.expunge(alice, sel.status.id)) == total
    assert (await client.append(alice, "INBOX", message("after"))).uid == total + 1


async def test_sessions_on_one_mailbox_agree(client, people):
    alice, _ = people
    other = await client.authenticate(alice.address, "alice-pw")
    for i in range(20):
        await client.append(alice, "INBOX", message(f"m{i}"))
    mb = (await client.status(alice, "INBOX")).id
    base = (await client.status(alice, "INBOX")).highestmodseq

    async def flagger(p, flag, uids):
        for u in uids:
            await client.store_flags(p, mb, [u], "add", frozenset({flag}))

    await asyncio.gather(
        flagger(alice, "\\Seen", range(1, 21)),
        flagger(other, "\\Flagged", range(20, 0, -1)),
        client.store_flags(other, mb, list(range(1, 11)), "add", frozenset({"\\Deleted"})),
    )
    gone = await client.expunge(other, mb)
    assert gone == list(range(1, 11))
    a, b = await client.changes(alice, mb, base), await client.changes(other, mb, base)
    assert [(m.uid, m.flags, m.modseq) for m in a.updated] == [(m.uid, m.flags, m.modseq) for m in b.updated]
    assert a.expunged == b.expunged == list(range(1, 11))
    assert all(m.flags == {"\\Seen", "\\Flagged"} for m in a.updated)
    assert a.status.highestmodseq > max(m.modseq for m in a.updated)  # the expunge came last
    sel = await client.select(other, "INBOX")
    assert sel.uids == list(range(11, 21))


async def test_each_message_is_recent_to_exactly_one_session(client, people):
    """RFC 3501 §2.3.2: \\Recent for the first session that SELECTs after the message came, or that learns
    of it with the mailbox selected; EXAMINE and STATUS see it and leave it. Many sessions at once."""
    alice, _ = people
    sessions = [alice] + [await client.authenticate(alice.address, "alice-pw") for _ in range(5)]
    for i in range(3):
        await client.append(alice, "INBOX", message(f"r{i}"))
    assert (await client.status(alice, "INBOX")).recent == 3
    examined = await client.select(sessions[1], "INBOX", claim_recent=False)
    assert examined.recent == {1, 2, 3} and examined.status.recent == 3
    assert (await client.status(alice, "INBOX")).recent == 3  # neither EXAMINE nor STATUS took them
    selections = await asyncio.gather(*(client.select(p, "INBOX") for p in sessions))
    assert sorted(len(s.recent) for s in selections) == [0, 0, 0, 0, 0, 3]
    assert sorted(s.status.recent for s in selections) == [0, 0, 0, 0, 0, 3]
    assert (await client.status(alice, "INBOX")).recent == 0
    mb = selections[0].status.id
    # new mail while all six have INBOX selected: each learns of it and asks; one gets each message
    for round_ in range(4):
        await client.append(alice, "INBOX", message(f"n{round_}"))
        top = (await client.status(alice, "INBOX")).uidnext
        marks = await asyncio.gather(*(client.claim_recent(p, mb, top) for p in sessions))
        assert sorted(marks, key=lambda m: m is None) == [top - 1] + [None] * 5
        assert await client.claim_recent(alice, mb, top, claim=False) == top  # EXAMINE: none left
    await client.append(alice, "INBOX", message("last"))
    assert await client.claim_recent(alice, mb, 100, claim=False) == 8  # a peek moves nothing
    assert (await client.status(alice, "INBOX")).recent == 1
