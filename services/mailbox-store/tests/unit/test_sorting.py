"""Base subjects (RFC 5256 §2.1), sort keys, SORT order and the two THREAD algorithms (RFC 5256 §4), on
rows built in memory; the REST round trip and the IMAP wire form are in imap-pop3's protocol tests."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow import mime
from mailflow_mailbox_store import sorting, sortkeys
from mailflow_mailbox_store.sortkeys import base_subject, msg_ids


@pytest.mark.parametrize(
    "raw, base, reply",
    [
        ("Hello", "Hello", False),
        ("Re: Hello", "Hello", True),
        ("RE: re: Fwd: Hello", "Hello", True),
        ("Fw: Hello", "Hello", True),
        ("Re [foo]: Hello", "Hello", True),  # subj-refwd with a blob before the colon
        ("[list] Re: Hello", "Hello", True),  # blobs before a leader
        ("[list] Hello", "Hello", False),  # (4) a leading blob goes when something is left
        ("[list]", "[list]", False),  # ... and stays when nothing would be
        ("[a] [b]", "[b]", False),
        ("Hello (fwd)", "Hello", True),  # (2) trailer
        ("Hello (FWD) (fwd)  ", "Hello", True),
        ("[Fwd: Re: Hello]", "Hello", True),  # (6) the forward wrapper, then again from (2)
        ("[fwd: [fwd: Hello (fwd)]]", "Hello", True),
        ("Re:Re:Re:", "", True),
        ("  Hello\t\r\n  world  ", "Hello world", False),  # (1) whitespace runs
        ("Review: Hello", "Review: Hello", False),  # "Re" must be followed by ":" (or a blob and ":")
        ("Fwdx: Hello", "Fwdx: Hello", False),
        ("=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "Grüße", True),  # RFC 2047 decoded first
        ("=?utf-8?b?W2xpc3RdIFJlOiBIZWxsbw==?=", "Hello", True),
        ("", "", False),
        (None, "", False),
    ],
)
def test_base_subject(raw, base, reply):
    assert base_subject(raw) == (base, reply)


def test_base_subject_is_bounded_and_linear():
    hostile = "Re: [" * 50_000 + "x" + "(fwd)" * 50_000
    started = time.monotonic()
    base, reply = base_subject(hostile)
    assert time.monotonic() - started < 1
    assert reply and len(base) <= sortkeys.MAX_SUBJECT
    assert base_subject("[" * 100_000)[0].startswith("[")


def test_msg_ids():
    assert msg_ids("<a@b> <c@d>\r\n <e f> junk <g@h>", 20) == ["a@b", "c@d", "g@h"]
    assert msg_ids("<a@b> <c@d> <e@f>", 2) == ["c@d", "e@f"]  # the nearest parents are kept
    assert msg_ids("<a@b> <c@d>", 5, first=True) == ["a@b"]
    assert msg_ids("<" + "x" * 300 + "@y> <ok@y>", 5) == ["ok@y"]
    assert msg_ids("<a@b", 5) == [] and msg_ids(None, 5) == []
    many = " ".join(f"<m{i}@x>" for i in range(10_000))
    assert msg_ids(many, 20) == [f"m{i}@x" for i in range(9_980, 10_000)]


def keys_of(raw: bytes) -> sortkeys.SortKeys:
    return sortkeys.of(mime.parse(raw))


def test_keys_of_a_message():
    k = keys_of(
        b'From: =?utf-8?q?J=C3=B6rg?= <joerg@x.test>\r\nTo: undisclosed:;, "Bob Q" <bob.q@y.test>\r\n'
        b"Cc: carol@z.test\r\nSubject: Re: [list] Fwd: plans\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
        b"Message-ID: <id1@x.test>\r\nIn-Reply-To: <p9@x.test>\r\nReferences: <p1@x.test>\r\n <p2@x.test>\r\n\r\nbody\r\n"
    )
    assert k.subject == "PLANS" and k.reply
    assert k.sent == 1_795_770_000  # 09:00 UTC
    assert (k.from_, k.to, k.cc) == ("JOERG", "BOB.Q", "CAROL")  # the group's start is no address
    assert (k.display_from, k.display_to) == ("jörg", "bob q")
    assert k.message_id == "id1@x.test" and k.parents == ("p1@x.test", "p2@x.test")
    k = keys_of(b"Subject: hi\r\nIn-Reply-To: <a@x> <b@x>\r\nDate: junk\r\nFrom: <only@x.test>\r\n\r\n")
    assert k.parents == ("a@x",) and k.sent is None and k.display_from == "only@x.test"
    assert (k.to, k.cc, k.message_id) == ("", "", "")


def row(
    uid: int, subject: str = "", sent: int | None = None, mid: str = "", parents: str = "", **kw
) -> sorting.Row:
    base, reply = base_subject(subject)
    keys = (sortkeys.ascii_upper(base), reply, sent, sortkeys.ascii_upper(kw.get("from_", "")), kw.get("to", ""), kw.get("cc", ""),
            kw.get("display_from", ""), "", mid, tuple(parents.split()))  # fmt: skip
    return sorting.row_of(uid, kw.get("size", 100), kw.get("internal", 1000 + uid), keys)


def test_sort_criteria_reverse_and_ties():
    rows = [
        row(1, "b", sent=30, from_="ZED", size=10),
        row(2, "Re: a", sent=None, internal=20, from_="amy", size=30),  # no Date: the internal date
        row(3, "a", sent=10, from_="AMY", size=20),
        row(4, "[x] B", sent=30, from_="bob", size=10),
    ]
    assert sorting.sort(rows, [("subject", False)]) == [2, 3, 1, 4]  # "A" ties keep the mailbox order
    assert sorting.sort(rows, [("date", False)]) == [3, 2, 1, 4]
    assert sorting.sort(rows, [("date", True)]) == [1, 4, 2, 3]  # a reversed tie keeps the order too
    assert sorting.sort(rows, [("size", False), ("subject", True)]) == [1, 4, 3, 2]
    assert sorting.sort(rows, [("arrival", True)]) == [4, 3, 1, 2]
    assert sorting.sort(rows, [("from", False)]) == [2, 3, 4, 1]  # i;ascii-casemap: amy = AMY, a tie


def test_ordered_subject():
    rows = [
        row(1, "beta", sent=5),
        row(2, "Re: alpha", sent=3),
        row(3, "alpha", sent=4),
        row(4, "Re: beta", sent=1),
        row(5, "gamma", sent=9),
    ]
    # groups: alpha {2 (3), 3 (4)}, beta {4 (1), 1 (5)}, gamma {5}; by their first message's date
    assert sorting.ordered_subject(rows) == [(4, 0), (1, 1), (2, 0), (3, 1), (5, 0)]


def test_references_chain_siblings_and_missing_parent():
    rows = [
        row(1, "plans", sent=1, mid="a"),
        row(2, "Re: plans", sent=2, mid="b", parents="a"),
        row(3, "Re: plans", sent=3, mid="c", parents="a b"),
        row(4, "Re: plans", sent=4, mid="d", parents="a"),
        row(5, "other", sent=5, mid="e", parents="gone"),  # parent not in the mailbox: a root
        row(6, "Re: lost", sent=6, mid="f", parents="x y"),  # two children of one missing message
        row(7, "Re: lost", sent=7, mid="g", parents="x z"),
    ]
    assert sorting.references(rows) == [
        (1, 0), (2, 1), (3, 2), (4, 1),  # 1 -> 2 -> 3, and 4 a second reply to 1
        (5, 0),
        (0, 0), (6, 1), (7, 1),  # dummy x (y and z are pruned away: one child each)
    ]  # fmt: skip


def test_references_subject_grouping():
    rows = [
        row(1, "Re: topic", sent=2, mid="a", parents="lost"),
        row(2, "topic", sent=3, mid="b"),  # no reply: becomes the parent of the reply root
        row(3, "news", sent=4, mid="c"),
        row(4, "news", sent=5, mid="d"),  # two non-replies: a new dummy holds both
    ]
    assert sorting.references(rows) == [(2, 0), (1, 1), (0, 0), (3, 1), (4, 1)]


def test_references_loops_and_duplicates():
    rows = [
        row(1, "x", sent=1, mid="a", parents="b"),
        row(2, "x", sent=2, mid="b", parents="a"),  # a loop: 2's link to a would close it
        row(3, "y", sent=3, mid="a"),  # a duplicate Message-ID: a message of its own
        row(4, "z", sent=4, mid="self", parents="self"),  # its own parent
    ]
    nodes = sorting.references(rows)
    assert sorted(u for u, _ in nodes) == [1, 2, 3, 4]
    assert (4, 0) in nodes and (3, 0) in nodes


def test_references_deep_chain_and_many_messages_stay_fast():
    n = 10_000
    chain = [row(i, "Re: deep", sent=i, mid=f"m{i}", parents=" ".join(f"m{j}" for j in range(max(1, i - 20), i)))
             for i in range(1, n + 1)]  # fmt: skip
    started = time.monotonic()
    nodes = sorting.references(chain)
    assert time.monotonic() - started < 5
    assert nodes == [(i, i - 1) for i in range(1, n + 1)]
    # reversed arrival: every message refers to ones that come later
    backwards = [row(n + 1 - i, "Re: deep", sent=i, mid=f"m{i}", parents=f"m{i - 1}" if i > 1 else "")
                 for i in range(1, n + 1)]  # fmt: skip
    backwards.sort(key=lambda r: r[sorting.UID])
    started = time.monotonic()
    assert len(sorting.references(backwards)) == n
    assert time.monotonic() - started < 5


def test_references_budget_bounds_the_id_table(monkeypatch):
    monkeypatch.setattr(sorting, "REFS_BUDGET", 1_000)
    rows = [
        row(i, "s", sent=i, mid=f"m{i}", parents=" ".join(f"p{i}-{j}" for j in range(20)))
        for i in range(1, 501)
    ]
    nodes = sorting.references(rows)
    assert sorted(u for u, _ in nodes if u) == list(range(1, 501))


# --- REFERENCES step 1 extended with new mail (sorting.FORESTS) against a run over every message ------

_IDS = [f"m{i}" for i in range(12)]
_message = st.tuples(
    st.sampled_from(["", *_IDS]),  # its Message-ID: none, or one that others share (duplicates)
    st.lists(st.sampled_from(_IDS), max_size=5),  # its parents: loops, self-references, missing ones
    st.sampled_from(["a", "Re: a", "b", "Fwd: b", "[x] Re: b", ""]),
    st.one_of(st.none(), st.integers(0, 6)),  # sent dates that tie, or none (the internal date)
)


def _rows(messages: list[tuple]) -> list[tuple]:
    return [row(uid, subject, sent=sent, mid=mid, parents=" ".join(parents), internal=uid % 4)
            for uid, (mid, parents, subject, sent) in enumerate(messages, 1)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, min_size=1, max_size=30), st.lists(st.integers(0, 30), max_size=3))
def test_references_after_new_mail_is_references_over_all(messages, cuts):
    """Step 1 kept per mailbox and extended by the new messages gives what a run over all of them gives,
    however the mailbox grew (each cut: a THREAD at that point)."""
    found = _rows(messages)
    sorting.FORESTS.clear()
    for cut in sorted(cuts):
        assert sorting.references(found[:cut], mailbox_id=1) == sorting.references(found[:cut])
    assert sorting.references(found, mailbox_id=1) == sorting.references(found)


def test_forest_is_extended_only_when_the_messages_start_the_same(monkeypatch):
    found = _rows([(f"m{i}", [f"m{i - 1}"] if i else [], "Re: a" if i else "a", i) for i in range(10)])
    extended: list[int] = []
    extend = sorting._Forest.extend
    monkeypatch.setattr(sorting._Forest, "extend", lambda f, rows: extended.append(len(rows)) or extend(f, rows))
    sorting.FORESTS.clear()
    sorting.references(found[:6], mailbox_id=7)
    assert sorting.references(found, mailbox_id=7) == sorting.references(found)
    assert extended[:2] == [6, 4]  # the new mail alone
    extended.clear()
    # an expunge, then new mail: as many messages or more, but not starting the same: all again
    changed = found[:2] + found[3:] + _rows([("n", ["m2"], "x", 1), ("o", ["m3"], "Re: a", 2)])[:2]
    assert sorting.references(changed, mailbox_id=7) == sorting.references(changed)
    assert extended[0] == 11
    assert sorting.references(found, mailbox_id=8) == sorting.references(found)  # another mailbox: its own


def test_forest_is_not_extended_with_another_number_of_parents(monkeypatch):
    monkeypatch.setattr(sorting, "REFS_BUDGET", 4)
    found = _rows([("a", [], "p", 1), ("b", ["a", "c"], "q", 2), ("d", [], "r", 3), ("e", [], "s", 4)])
    sorting.FORESTS.clear()
    # two messages: two parents each, b under a (through the dummy c); four: one each, b under c alone
    assert sorting.references(found[:2], mailbox_id=7) == [(1, 0), (2, 1)]
    assert sorting.references(found, mailbox_id=7) == [(1, 0), (2, 0), (3, 0), (4, 0)]


def test_references_forest_does_not_change_when_threaded():
    found = _rows([("a", [], "x", 1), ("b", ["gone", "a"], "Re: x", 2), ("c", ["gone"], "x", 3), ("d", [], "x", 0)])
    forest = sorting._Forest(20)
    forest.extend(found)
    before = (forest.parent[:], forest.row[:], forest.kids[:], dict(forest.by_id))
    first = sorting._threads(forest)
    assert (forest.parent, forest.row, forest.kids, forest.by_id) == before
    assert sorting._threads(forest) == first == sorting.references(found)
    # nor when new mail extends it: a THREAD running at the same time may be reading it
    sorting.FORESTS.clear()
    held = sorting.FORESTS.extended(7, found[:2], 20)
    before = (held.parent[:], held.row[:], held.kids[:], dict(held.by_id), held.added[:])
    assert sorting.FORESTS.extended(7, found, 20) is not held
    assert (held.parent, held.row, held.kids, held.by_id, held.added) == before


def test_rows_hold_no_object_the_gc_walks():
    import gc

    r = row(1, "Re: a", sent=5, mid="m1", parents="m0 p")
    for _ in range(3):  # a tuple is let go once what it holds has been: one level per collection
        gc.collect()
    assert not gc.is_tracked(r) and not gc.is_tracked(r[sorting.KEYS])
