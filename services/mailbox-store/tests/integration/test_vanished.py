"""QRESYNC's "which UIDs vanished since MODSEQ X" (RFC 7162 §3.2.5): tombstones per expunge and MOVE with
the MODSEQ HIGHESTMODSEQ moved to, read by select(vanished_since=X) in the listing's snapshot and by
changes(); maintenance keeps the newest `expunged_keep` per mailbox, and a question about a MODSEQ
before the pruned ones is answered complete=False (never a short list taken for the whole truth)."""

from __future__ import annotations

from mailflow_mailbox_store import maintenance

from .conftest import message


async def _fill(client, p, n: int, name: str = "INBOX") -> int:
    await client.append_many(p, name, [(message(f"v{i}"), frozenset(), None) for i in range(n)])
    return (await client.status(p, name)).id


async def _expunge(client, p, mb: int, uids: list[int]) -> int:
    await client.store_flags(p, mb, uids, "add", frozenset({"\\Deleted"}))
    assert await client.expunge(p, mb, uids) == uids
    return (await client.status(p, "INBOX")).highestmodseq


async def test_select_reports_vanished_uids_exactly_and_expunges_move_highestmodseq(client, people):
    alice, _ = people
    mb = await _fill(client, alice, 8)
    start = (await client.status(alice, "INBOX")).highestmodseq
    sel = await client.select(alice, "INBOX")
    assert sel.vanished is None  # not asked
    after_first = await _expunge(client, alice, mb, [2, 3])
    assert after_first == start + 2  # the \Deleted STORE, then the expunge: each its own MODSEQ
    await client.move(alice, mb, [5], "Trash")
    moved = (await client.status(alice, "INBOX")).highestmodseq
    assert moved == after_first + 1
    sel = await client.select(alice, "INBOX", vanished_since=start)
    assert sel.vanished == [2, 3, 5] and sel.vanished_complete
    assert sel.uids == [1, 4, 6, 7, 8]
    sel = await client.select(alice, "INBOX", vanished_since=after_first)
    assert sel.vanished == [5] and sel.vanished_complete
    sel = await client.select(alice, "INBOX", vanished_since=moved)
    assert sel.vanished == [] and sel.vanished_complete
    ch = await client.changes(alice, mb, start)
    assert ch.expunged == [2, 3, 5] and ch.expunged_complete


async def test_pruned_tombstones_make_older_questions_incomplete_never_short(client, people, service):
    _, bob = people
    mb = await _fill(client, bob, 10)
    start = (await client.status(bob, "INBOX")).highestmodseq
    first = await _expunge(client, bob, mb, [1, 2, 3])
    second = await _expunge(client, bob, mb, [7, 8])
    sel_before = await client.select(bob, "INBOX")  # the listing cache holds this state now
    # Keep 2 per mailbox: the newest expunge (7, 8) stays, the older one goes, the floor rises to it.
    dropped = await service.store.db.write(maintenance.purge_tombstones, 2)
    assert dropped >= 3
    ch = await client.changes(bob, mb, start)
    assert ch.expunged == [7, 8] and not ch.expunged_complete
    sel = await client.select(bob, "INBOX", vanished_since=start)
    assert sel.vanished == [7, 8] and not sel.vanished_complete
    sel = await client.select(bob, "INBOX", vanished_since=first)  # at the floor: exact again
    assert sel.vanished == [7, 8] and sel.vanished_complete
    assert (await client.changes(bob, mb, second)).expunged_complete
    # A listing cached before the pruning is not brought up to date from the tombstones left.
    await _expunge(client, bob, mb, [9])
    sel = await client.select(bob, "INBOX")
    assert sel.uids == [u for u in sel_before.uids if u != 9] == [4, 5, 6, 10]
    # Pruning again with room to spare changes nothing; the floor never goes down.
    assert await service.store.db.write(maintenance.purge_tombstones, 100) == 0
    assert not (await client.changes(bob, mb, start)).expunged_complete


async def test_a_listing_cached_before_pruned_tombstones_is_scanned_afresh(client, people, service):
    """The listing cache brings an old listing up to date from the tombstones since; once some of those
    are pruned it must not (it would keep messages that are gone)."""
    alice, _ = people
    await client.create_mailbox(alice, "Cached")
    mb = await _fill(client, alice, 6, "Cached")
    assert (await client.select(alice, "Cached")).uids == [1, 2, 3, 4, 5, 6]  # cached at this state
    for u in (1, 2, 3):
        await client.store_flags(alice, mb, [u], "add", frozenset({"\\Deleted"}))
        assert await client.expunge(alice, mb, [u]) == [u]
    await service.store.db.write(maintenance.purge_tombstones, 1)  # only 3's tombstone is left
    assert (await client.select(alice, "Cached")).uids == [4, 5, 6]
