"""Messages through StoreClient: append, fetch, flags and MODSEQ, expunge and tombstones, copy and
move with UIDPLUS data, changes(), events and the "retrieved" trace step."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from mailflow import mime
from mailflow.errors import Invalid, NotFound, QuotaExceeded
from mailflow.store.api import DeliverItem
from mailflow.store.client import session_origin

from .conftest import message


async def inbox(client, p):
    return (await client.status(p, "INBOX")).id


async def test_append_and_fetch_bodies_bytes_match(client, people):
    alice, _ = people
    raws = [message(f"m{i}", body="line\r\n" * i) for i in range(5)]
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    results = [await client.append(alice, "INBOX", raw, internal_date=when) for raw in raws]
    assert [r.uid for r in results] == [1, 2, 3, 4, 5]
    assert len({r.uidvalidity for r in results}) == 1
    mb = await inbox(client, alice)
    bodies = await client.fetch_bodies(alice, mb, [1, 3, 5, 99])
    assert bodies == {1: raws[0], 3: raws[2], 5: raws[4]}
    metas = await client.fetch_meta(alice, mb, [2, 4])
    assert [(m.uid, m.size, m.internal_date) for m in metas] == [
        (2, len(raws[1]), when),
        (4, len(raws[3]), when),
    ]
    parsed = await client.fetch_parsed(alice, mb, [2])
    p = mime.from_json(parsed[2])
    assert p.envelope.subject == "m1"
    assert p.body.type == "TEXT" and p.body.end == len(raws[1])
    assert await client.fetch_bodies(alice, mb, []) == {}


async def test_bodies_past_4_mib_are_streamed_in_batches_and_arrive_whole(client, people):
    """Over READ_BATCH_BYTES in one call: the answer is streamed, the bodies read a batch at a time."""
    alice, _ = people
    raws = [message(f"big{i}", body=(f"{i}" * 99 + "\r\n") * 20_000) for i in range(3)]  # ~2 MiB each
    for raw in raws:
        await client.append(alice, "INBOX", raw)
    mb = await inbox(client, alice)
    uids = (await client.select(alice, "INBOX")).uids
    got = await client.fetch_bodies(alice, mb, uids)
    assert [got[u] for u in uids[-3:]] == raws


async def test_append_errors(client, people, admin):
    alice, _ = people
    with pytest.raises(NotFound):
        await client.append(alice, "Nope", message())
    with pytest.raises(Invalid):
        await client.append(alice, "INBOX", message(), flags=frozenset({"\\Bogus"}))
    await admin.put(f"/admin/users/{alice.address}/quota", json={"quota_bytes": 300})
    with pytest.raises(QuotaExceeded) as e:
        await client.append(alice, "INBOX", message(body="x" * 400))
    assert e.value.permanent


async def test_flags_and_modseq(client, people):
    alice, _ = people
    for i in range(3):
        await client.append(alice, "INBOX", message(f"m{i}"))
    mb = await inbox(client, alice)
    before = await client.status(alice, "INBOX")
    res = await client.store_flags(alice, mb, [1, 2], "add", frozenset({"\\Seen", "$Important"}))
    assert [(m.uid, m.flags) for m in res.updated] == [
        (1, {"\\Seen", "$Important"}),
        (2, {"\\Seen", "$Important"}),
    ]
    modseq = res.updated[0].modseq
    assert modseq > before.highestmodseq and (await client.status(alice, "INBOX")).highestmodseq == modseq
    res = await client.store_flags(alice, mb, [1, 2, 3], "remove", frozenset({"$important"}))
    assert [m.flags for m in res.updated] == [{"\\Seen"}, {"\\Seen"}, frozenset()]
    assert res.updated[2].modseq < res.updated[0].modseq  # message 3 did not change
    res = await client.store_flags(alice, mb, [3], "replace", frozenset({"\\Flagged", "\\Recent"}))
    assert res.updated[0].flags == {"\\Flagged"}  # \Recent is not settable
    # RFC 7162 UNCHANGEDSINCE: message 1 changed after `mark`, so it is refused
    mark = (await client.status(alice, "INBOX")).highestmodseq
    await client.store_flags(alice, mb, [1], "remove", frozenset({"\\Seen"}))
    res = await client.store_flags(alice, mb, [1, 3], "add", frozenset({"\\Answered"}), unchanged_since=mark)
    assert res.modified == [1] and [m.uid for m in res.updated] == [3]
    with pytest.raises(Invalid):
        await client.store_flags(alice, mb, [1], "add", frozenset({"\\Nonsense"}))
    sel = await client.select(alice, "INBOX")
    assert sel.flags == [frozenset(), {"\\Seen"}, {"\\Flagged", "\\Answered"}]


async def test_expunge_leaves_tombstones_and_uids_are_never_reused(client, people):
    alice, _ = people
    for i in range(5):
        await client.append(alice, "INBOX", message(f"m{i}"))
    mb = await inbox(client, alice)
    start = (await client.status(alice, "INBOX")).highestmodseq
    await client.store_flags(alice, mb, [2, 3, 4], "add", frozenset({"\\Deleted"}))
    assert await client.expunge(alice, mb, [3, 4, 5]) == [3, 4]  # only \Deleted ones among those given
    assert await client.expunge(alice, mb) == [2]
    assert await client.expunge(alice, mb) == []
    ch = await client.changes(alice, mb, start)
    assert ch.expunged == [2, 3, 4] and [m.uid for m in ch.updated] == []
    assert ch.status.messages == 2
    assert (await client.append(alice, "INBOX", message("after"))).uid == 6
    sel = await client.select(alice, "INBOX")
    assert sel.uids == [1, 5, 6]
    ch = await client.changes(alice, mb, sel.status.highestmodseq)
    assert ch.updated == [] and ch.expunged == []


async def test_changes_reports_new_and_changed_messages(client, people):
    alice, _ = people
    await client.append(alice, "INBOX", message("a"))
    mb = await inbox(client, alice)
    since = (await client.status(alice, "INBOX")).highestmodseq
    await client.append(alice, "INBOX", message("b"))
    await client.store_flags(alice, mb, [1], "add", frozenset({"\\Seen"}))
    ch = await client.changes(alice, mb, since)
    assert [(m.uid, m.flags) for m in ch.updated] == [(1, {"\\Seen"}), (2, frozenset())]
    assert ch.status.uidnext == 3 and ch.status.unseen == 1


async def test_copy_and_move_keep_uidplus_data(client, people):
    alice, _ = people
    for i in range(3):
        await client.append(alice, "INBOX", message(f"m{i}"), flags=frozenset({"\\Flagged"}))
    mb = await inbox(client, alice)
    archive = await client.status(alice, "Archive")
    res = await client.copy(alice, mb, [1, 3, 7], "Archive")
    assert (res.uidvalidity, res.source_uids, res.dest_uids) == (archive.uidvalidity, [1, 3], [1, 2])
    assert (await client.status(alice, "INBOX")).messages == 3
    got = await client.fetch_bodies(alice, archive.id, [1, 2])
    assert got == {1: message("m0"), 2: message("m2")}
    assert {m.uid: m.flags for m in await client.fetch_meta(alice, archive.id, [1, 2])} == {
        1: {"\\Flagged"},
        2: {"\\Flagged"},
    }
    since = (await client.status(alice, "INBOX")).highestmodseq
    res = await client.move(alice, mb, [2, 3], "Trash")
    assert (res.source_uids, res.dest_uids) == ([2, 3], [1, 2])
    ch = await client.changes(alice, mb, since)
    assert ch.expunged == [2, 3] and ch.status.messages == 1
    with pytest.raises(NotFound):
        await client.copy(alice, mb, [1], "Nope")
    res = await client.copy(alice, mb, [42], "Archive")
    assert res.source_uids == [] and res.dest_uids == []


async def test_copy_and_move_into_the_same_mailbox(client, people, admin):
    """The source mailbox as the destination: new UIDs, bodies and flags kept, MOVE leaves tombstones
    for the originals, the user's usage counts each copy once, and nothing of a body is lost."""
    alice, _ = people
    for i in range(2):
        await client.append(alice, "INBOX", message(f"m{i}"), flags=frozenset({"\\Flagged"} if i else set()))
    mb = await inbox(client, alice)
    res = await client.copy(alice, mb, [1, 2], "INBOX")
    assert (res.source_uids, res.dest_uids) == ([1, 2], [3, 4])
    since = (await client.status(alice, "INBOX")).highestmodseq
    res = await client.move(alice, mb, [2, 4], "INBOX")
    assert (res.source_uids, res.dest_uids) == ([2, 4], [5, 6])
    ch = await client.changes(alice, mb, since)
    assert ch.expunged == [2, 4] and [(m.uid, m.flags) for m in ch.updated] == [(5, {"\\Flagged"}), (6, {"\\Flagged"})]
    assert ch.status.messages == 4 and ch.status.uidnext == 7
    assert await client.fetch_bodies(alice, mb, [1, 3, 5, 6]) == {
        1: message("m0"), 3: message("m0"), 5: message("m1"), 6: message("m1"),
    }  # fmt: skip
    u = (await admin.get(f"/admin/users/{alice.address}")).json()
    assert (u["messages"], u["used_bytes"]) == (4, 2 * len(message("m0")) + 2 * len(message("m1")))
    await client.store_flags(alice, mb, [1, 3, 5, 6], "add", frozenset({"\\Deleted"}))
    assert await client.expunge(alice, mb) == [1, 3, 5, 6]
    u = (await admin.get(f"/admin/users/{alice.address}")).json()
    assert (u["messages"], u["used_bytes"]) == (0, 0)


async def test_usage_counts_follow_every_change(client, people, admin):
    alice, _ = people
    raw = message("sized")
    for _ in range(3):
        await client.append(alice, "INBOX", raw)
    mb = await inbox(client, alice)
    await client.copy(alice, mb, [1], "Archive")
    await client.move(alice, mb, [2], "Trash")
    await client.store_flags(alice, mb, [3], "add", frozenset({"\\Deleted"}))
    await client.expunge(alice, mb)
    u = (await admin.get(f"/admin/users/{alice.address}")).json()
    assert (u["messages"], u["used_bytes"]) == (3, 3 * len(raw))
    await client.delete_mailbox(alice, "Archive")
    u = (await admin.get(f"/admin/users/{alice.address}")).json()
    assert (u["messages"], u["used_bytes"]) == (2, 2 * len(raw))


async def test_keywords_survive_and_are_listed(client, people):
    alice, _ = people
    await client.append(alice, "INBOX", message(), flags=frozenset({"$Label1", "NonJunk", "\\Seen"}))
    sel = await client.select(alice, "INBOX")
    assert sel.flags == [{"$Label1", "NonJunk", "\\Seen"}]
    await client.copy(alice, sel.status.id, [1], "Archive")
    assert (await client.select(alice, "Archive")).flags == [{"$Label1", "NonJunk", "\\Seen"}]


async def test_events_carry_the_origin(client, people, service):
    alice, _ = people
    await client.append(alice, "INBOX", message(), flags=frozenset({"$Later", "\\Flagged"}))
    appended = service.publisher.events[0]
    (meta,) = await client.fetch_meta(alice, await inbox(client, alice), [1])
    assert appended.flags == [sorted(meta.flags)] and appended.modseq == meta.modseq == appended.since + 1
    mb = await inbox(client, alice)
    await client.store_flags(alice, mb, [1], "add", frozenset({"\\Deleted"}))
    await client.expunge(alice, mb)
    await client.create_mailbox(alice, "Box")
    await client.rename_mailbox(alice, "Box", "Box2")
    await client.delete_mailbox(alice, "Box2")
    kinds = [(e.kind, e.mailbox, e.origin) for e in service.publisher.events]
    origin = session_origin(alice)
    assert origin
    assert kinds == [
        ("appended", "INBOX", origin),
        ("flags", "INBOX", origin),
        ("expunged", "INBOX", origin),
        ("mailbox_created", "Box", origin),
        ("mailbox_renamed", "Box2", origin),
        ("mailbox_deleted", "Box2", origin),
    ]
    e = service.publisher.events[2]
    assert (
        e.user_id == alice.user_id
        and e.uids == [1]
        and e.modseq == (await client.status(alice, "INBOX")).highestmodseq
    )


async def test_first_body_fetch_publishes_retrieved_once(client, people, service):
    alice, _ = people
    await client.deliver(
        [DeliverItem("Q7/alice", alice.address, message("traced"), queue_id="Q7", trace_id="T7")]
    )
    mb = await inbox(client, alice)
    await client.fetch_parsed(alice, mb, [1])  # not a body fetch
    await client.fetch_bodies(alice, mb, [1])
    await client.fetch_bodies(alice, mb, [1])

    async def steps():
        return [(t.step, t.queue_id, t.trace_id) for t in service.publisher.traces]

    from tests.support import await_for

    await await_for(lambda: _async(len(service.publisher.traces) == 2))
    assert await steps() == [("mailbox", "Q7", "T7"), ("retrieved", "Q7", "T7")]


async def _async(value):
    return value


async def test_search(client, people):
    alice, _ = people
    from datetime import date

    from mailflow.store import search as s

    await client.append(
        alice, "INBOX", message("Invoice 42", body="Please pay."), flags=frozenset({"\\Seen"})
    )
    await client.append(
        alice, "INBOX", message("Lunch", body="Sandwiches =E2=82=AC5", extra="Content-Transfer-Encoding: quoted-printable\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n")
    )  # fmt: skip
    await client.append(alice, "INBOX", message("hello", body="x" * 5000, extra="X-Spam: yes\r\n"),
                        internal_date=datetime(2020, 5, 1, 12, tzinfo=UTC))  # fmt: skip
    mb = await inbox(client, alice)

    async def find(key):
        return await client.search(alice, mb, key)

    assert await find(s.All()) == [1, 2, 3]
    assert await find(s.Flag("\\Seen")) == [1]
    assert await find(s.Flag("\\Seen", present=False)) == [2, 3]
    assert await find(s.Header("subject", "invoice")) == [1]
    assert await find(s.Header("x-spam", "")) == [3]
    assert await find(s.Not(s.Header("x-spam", ""))) == [1, 2]
    assert await find(s.Text("body", "sandwiches €5")) == [2]
    assert await find(s.Text("text", "lunch")) == [2]
    assert await find(s.Text("body", "lunch")) == []
    assert await find(s.Size("larger", 4000)) == [3]
    assert await find(s.Or(s.Size("larger", 4000), s.Flag("\\Seen"))) == [1, 3]
    assert await find(s.And((s.Uids(((2, 3),)), s.Not(s.Flag("\\Seen"))))) == [2, 3]
    assert await find(s.Date("internal", "before", date(2021, 1, 1))) == [3]
    assert await find(s.Date("internal", "on", date(2020, 5, 1))) == [3]
    assert await find(s.Date("sent", "on", date(2026, 11, 27))) == [1, 2, 3]
    assert await find(s.Date("sent", "before", date(2026, 11, 27))) == []
    assert await find(s.Flag("$NeverUsed")) == []
    assert await find(s.Flag("$NeverUsed", present=False)) == [1, 2, 3]
    modseq = (await client.status(alice, "INBOX")).highestmodseq
    await client.store_flags(alice, mb, [2], "add", frozenset({"$Done"}))
    assert await find(s.ModSeq(modseq + 1)) == [2]
    assert await find(s.Flag("$done")) == [2]
    many = s.Uids(tuple((i, i) for i in range(1, 200, 2)))  # more ranges than SQL gets: checked in Python
    assert await find(many) == [1, 3]
    with pytest.raises(Invalid):
        await client._json("POST", "/access/search", json={"mailbox_id": mb, "key": {"k": "bogus"}}, p=alice)


async def test_sections_are_cut_in_the_store(client, people):
    alice, _ = people
    raw = (
        b"From: a@elsewhere.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--b--\r\n"
    )
    await client.append(alice, "INBOX", raw)
    await client.append(alice, "INBOX", message("plain"))
    mb = (await client.status(alice, "INBOX")).id
    heads = await client.fetch_sections(alice, mb, [1, 2], "HEADER")
    assert heads[1].startswith(b"From: a@elsewhere.test") and heads[1].endswith(b"\r\n\r\n")
    assert heads[2] == message("plain").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert (await client.fetch_sections(alice, mb, [1], "2"))[1] == b"<p>second</p>"
    fields = await client.fetch_sections(alice, mb, [1], "HEADER.FIELDS (SUBJECT)")
    assert fields[1] == b"Subject: parts\r\n\r\n"
    with pytest.raises(Invalid):
        await client.fetch_sections(alice, mb, [1], "NOT A SECTION")


async def test_header_search_is_answered_from_the_header_cache(client, people):
    """UID SEARCH HEADER polled by a client reads each body's stored parse once; later searches use the
    cached (name, casefolded value) pairs, kept by the body's SHA-256 (content-addressed: never stale)."""
    from mailflow.store import search as s
    from mailflow_mailbox_store import search as store_search

    alice, _ = people
    raws = [message(f"cached {i}", extra=f"X-Bench-Id: Token-{i}\r\n") for i in range(3)]
    for raw in raws:
        await client.append(alice, "INBOX", raw)
    mb = await inbox(client, alice)
    uids = await client.search(alice, mb, s.All())
    assert await client.search(alice, mb, s.Header("x-bench-id", "token-1")) == uids[-2:-1]
    shas = [hashlib.sha256(raw).digest() for raw in raws]
    assert all(store_search.HEADERS.get(sha) is not None for sha in shas)
    # from now on the cache answers: a planted entry proves it (and is taken back)
    kept = store_search.HEADERS.get(shas[0])
    store_search.HEADERS.put(shas[0], s.Fields((("x-bench-id", "token-1"),)))
    try:
        assert await client.search(alice, mb, s.Header("x-bench-id", "token-1")) == [uids[-3], uids[-2]]
    finally:
        store_search.HEADERS.put(shas[0], s.Fields(kept))
    assert await client.search(alice, mb, s.Header("x-bench-id", "token-1")) == uids[-2:-1]
    assert await client.search(alice, mb, s.And((s.Header("x-bench-id", "TOKEN"), s.Not(s.Header("subject", "cached 2"))))) == uids[-3:-1]
    assert await client.search(alice, mb, s.Or(s.Header("x-bench-id", "token-2"), s.Text("text", "x-bench-id: token-0"))) == [uids[-3], uids[-1]]


def test_header_cache_is_bounded_and_drops_the_oldest():
    from mailflow.store import search as s
    from mailflow_mailbox_store.search import HeaderCache

    cache = HeaderCache(max_entries=10)
    for i in range(25):
        cache.put(bytes([i]), s.Fields((("subject", str(i)),)))
    assert len(cache) <= 10
    assert cache.get(bytes([24])) == (("subject", "24"),) and cache.get(bytes([0])) is None
    off = HeaderCache(max_entries=0)
    off.put(b"x", s.Fields(()))
    assert len(off) == 0


async def test_header_search_looks_at_every_value_of_its_field_and_no_other(client, people):
    """HEADER compares against each occurrence of the named field (a repeated field, such as Received,
    matches on any of them), and never against another field's value."""
    from mailflow.store import search as s

    alice, _ = people
    raw = message("repeated fields", extra="Received: from first.test\r\nReceived: from Second.Test\r\nX-Other: needle\r\n")
    await client.append(alice, "INBOX", raw)
    mb = await inbox(client, alice)
    (uid,) = await client.search(alice, mb, s.Header("subject", "repeated fields"))
    assert uid in await client.search(alice, mb, s.Header("received", "second.test"))
    assert uid in await client.search(alice, mb, s.Header("received", "FIRST"))
    assert uid not in await client.search(alice, mb, s.Header("received", "needle"))
    assert uid in await client.search(alice, mb, s.Header("x-other", ""))
    assert uid not in await client.search(alice, mb, s.Header("x-missing", ""))
    both = s.And((s.Header("received", "first"), s.Header("x-other", "needle"), s.All()))
    assert uid in await client.search(alice, mb, both)
    assert uid not in await client.search(alice, mb, s.And((both, s.Not(s.Header("received", "second")))))
