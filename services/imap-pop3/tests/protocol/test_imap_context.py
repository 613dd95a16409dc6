"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4) over a real socket: a search with RETURN (UPDATE) is
kept, and another session's new mail, expunges and flag changes (and this session's own) come back as
ESEARCH ADDTO / REMOVEFROM; CANCELUPDATE; the bound on contexts (NOUPDATE); hostile input."""

from __future__ import annotations

import pytest
from imaptest import Raw, make_message

from mailflow_imap_pop3.settings import Settings

MAX_CONTEXTS = Settings.model_fields["max_search_contexts"].default


def selected(srv, mailbox="INBOX") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("s0", f"SELECT {mailbox}")[-1].startswith(b"s0 OK")
    return c


def fill(srv, subjects):
    for subject in subjects:
        srv.deliver("alice@example.test", make_message(subject))


def esearch(lines: list[bytes]) -> list[bytes]:
    return [ln for ln in lines if ln.startswith(b"* ESEARCH")]


def test_capabilities(srv):
    caps = selected(srv).cmd("c1", "CAPABILITY")[0].split()
    assert b"CONTEXT=SEARCH" in caps and b"CONTEXT=SORT" in caps


def test_uid_search_update_follows_flags_new_mail_and_expunges(srv):
    fill(srv, ["a", "b", "c"])
    c, other = selected(srv), selected(srv)
    assert c.cmd("u1", "UID SEARCH RETURN (UPDATE) UNSEEN") == [
        b'* ESEARCH (TAG "u1") UID ALL 1:3',
        b"u1 OK UID SEARCH completed",
    ]
    other.cmd("o1", "STORE 2 +FLAGS.SILENT (\\Seen)")
    lines = c.cmd("n1", "NOOP")
    assert lines[-2:] == [b'* ESEARCH (TAG "u1") UID REMOVEFROM (0 2)', b"n1 OK NOOP completed"]
    assert lines[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen")  # the FETCH that explains it comes first
    fill(srv, ["d"])
    lines = c.cmd("n2", "NOOP")
    assert b"* 4 EXISTS" in lines and esearch(lines) == [b'* ESEARCH (TAG "u1") UID ADDTO (0 4)']
    other.cmd("o2", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.cmd("o3", "EXPUNGE")
    lines = c.cmd("n3", "NOOP")
    assert lines.index(b"* 1 EXPUNGE") < lines.index(b'* ESEARCH (TAG "u1") UID REMOVEFROM (0 1)')
    other.cmd("o4", "STORE 1 -FLAGS.SILENT (\\Seen)")  # UID 2 matches again
    assert esearch(c.cmd("n4", "NOOP")) == [b'* ESEARCH (TAG "u1") UID ADDTO (0 2)']
    assert esearch(c.cmd("n5", "NOOP")) == []  # nothing changed: nothing said


def test_own_store_and_unchanged_matches_say_nothing_extra(srv):
    fill(srv, ["a", "b"])
    c = selected(srv)
    c.cmd("u1", "UID SEARCH RETURN (UPDATE) FLAGGED")
    lines = c.cmd("s1", "STORE 2 +FLAGS (\\Flagged)")
    assert esearch(lines) == [b'* ESEARCH (TAG "u1") UID ADDTO (0 2)']
    assert esearch(c.cmd("s2", "STORE 2 +FLAGS (\\Seen)")) == []  # still flagged: no change to tell
    assert esearch(c.cmd("s3", "UID FETCH 2 BODY[]")) == []  # \\Seen is set, FLAGGED unaffected


def test_content_criteria_ask_only_about_new_messages(srv):
    fill(srv, ["hello 1", "other"])
    c, other = selected(srv), selected(srv)
    assert esearch(c.cmd("h1", "UID SEARCH RETURN (UPDATE) SUBJECT hello")) == [
        b'* ESEARCH (TAG "h1") UID ALL 1'
    ]
    other.cmd("o1", "STORE 1:2 +FLAGS.SILENT (\\Seen)")  # flags cannot change a SUBJECT match
    assert esearch(c.cmd("n1", "NOOP")) == []
    fill(srv, ["nothing", "hello 2"])
    assert esearch(c.cmd("n2", "NOOP")) == [b'* ESEARCH (TAG "h1") UID ADDTO (0 4)']
    # content and flags together: a flag change makes the store look at that message alone
    c.cmd("h2", "UID SEARCH RETURN (UPDATE) SUBJECT hello UNFLAGGED")
    other.cmd("o0", "NOOP")  # the other session learns of UID 4 first
    other.cmd("o2", "UID STORE 4 +FLAGS.SILENT (\\Flagged)")
    assert esearch(c.cmd("n3", "NOOP")) == [b'* ESEARCH (TAG "h2") UID REMOVEFROM (0 4)']


def test_sequence_number_search_update(srv):
    fill(srv, ["a", "b", "c"])
    c, other = selected(srv), selected(srv)
    assert esearch(c.cmd("q1", "SEARCH RETURN (UPDATE) UNSEEN")) == [b'* ESEARCH (TAG "q1") ALL 1:3']
    other.cmd("o1", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.cmd("o2", "EXPUNGE")
    lines = c.cmd("n1", "NOOP")  # without UID the EXPUNGE alone tells it (the numbers move)
    assert b"* 1 EXPUNGE" in lines and esearch(lines) == []
    other.cmd("o3", "STORE 2 +FLAGS.SILENT (\\Seen)")  # was 3
    assert esearch(c.cmd("n2", "NOOP")) == [b'* ESEARCH (TAG "q1") REMOVEFROM (0 2)']
    fill(srv, ["d"])
    assert esearch(c.cmd("n3", "NOOP")) == [b'* ESEARCH (TAG "q1") ADDTO (0 3)']


def test_sort_update_positions(srv):
    fill(srv, ["b", "d", "f"])  # UIDs 1 2 3
    c, other = selected(srv), selected(srv)
    assert esearch(c.cmd("s1", "UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL")) == [
        b'* ESEARCH (TAG "s1") UID ALL 1:3'
    ]
    fill(srv, ["e", "a"])  # UIDs 4 5: order a b d e f = 5 1 2 4 3
    assert esearch(c.cmd("n1", "NOOP")) == [b'* ESEARCH (TAG "s1") UID ADDTO (1 5 4 4)']
    other.cmd("o0", "NOOP")
    other.cmd("o1", "UID STORE 1,4 +FLAGS.SILENT (\\Deleted)")
    other.cmd("o2", "EXPUNGE")  # gone: b (position 2), e (position 4); the last first
    assert esearch(c.cmd("n2", "NOOP")) == [b'* ESEARCH (TAG "s1") UID REMOVEFROM (4 4 2 1)']
    c.cmd("s2", "UID SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 UNSEEN")  # f d a = 3 2 5
    other.cmd("o3", "UID STORE 2 +FLAGS.SILENT (\\Seen)")
    assert esearch(c.cmd("n3", "NOOP")) == [b'* ESEARCH (TAG "s2") UID REMOVEFROM (2 2)']
    other.cmd("o4", "UID STORE 2 -FLAGS.SILENT (\\Seen)")
    assert esearch(c.cmd("n4", "NOOP")) == [b'* ESEARCH (TAG "s2") UID ADDTO (2 2)']


def test_min_max_count_are_sent_again_when_they_change(srv):
    fill(srv, ["a", "b"])
    c, other = selected(srv), selected(srv)
    assert esearch(c.cmd("m1", "UID SEARCH RETURN (COUNT MAX UPDATE) UNSEEN")) == [
        b'* ESEARCH (TAG "m1") UID MAX 2 COUNT 2'
    ]
    fill(srv, ["c"])
    assert esearch(c.cmd("n1", "NOOP")) == [b'* ESEARCH (TAG "m1") UID MAX 3 COUNT 3']
    other.cmd("o1", "UID STORE 1 +FLAGS.SILENT (\\Seen)")
    assert esearch(c.cmd("n2", "NOOP")) == [b'* ESEARCH (TAG "m1") UID MAX 3 COUNT 2']


def test_cancelupdate_and_unselect_end_contexts(srv):
    fill(srv, ["a"])
    c = selected(srv)
    c.cmd("u1", "UID SEARCH RETURN (UPDATE) ALL")
    c.cmd("u2", "UID SEARCH RETURN (UPDATE) ALL")
    assert c.cmd("x1", 'CANCELUPDATE "u1"') == [b"x1 OK CANCELUPDATE completed"]
    fill(srv, ["b"])
    assert esearch(c.cmd("n1", "NOOP")) == [b'* ESEARCH (TAG "u2") UID ADDTO (0 2)']
    assert c.cmd("x2", 'CANCELUPDATE "u1" "u2"')[-1].startswith(b"x2 NO No search context for tag 'u1'")
    fill(srv, ["c"])
    assert esearch(c.cmd("n2", "NOOP")) == []  # u2 ended all the same
    c.cmd("u3", "UID SEARCH RETURN (UPDATE) ALL")
    c.cmd("s1", "SELECT INBOX")  # a new selection forgets the contexts
    fill(srv, ["d"])
    assert esearch(c.cmd("n3", "NOOP")) == []
    assert c.cmd("x3", 'CANCELUPDATE "u3"')[-1].startswith(b"x3 NO")
    c.cmd("u4", "UNSELECT")
    assert c.cmd("x4", 'CANCELUPDATE "u4"')[-1].startswith(b"x4 NO [CLIENTBUG]")  # not selected


def test_limits_noupdate(srv):
    fill(srv, ["a"])
    c = selected(srv)
    for i in range(MAX_CONTEXTS):
        assert c.cmd(f"t{i}", "UID SEARCH RETURN (UPDATE) ALL")[0] == f'* ESEARCH (TAG "t{i}") UID ALL 1'.encode()
    lines = c.cmd("t0", "UID SEARCH RETURN (UPDATE) ALL")  # the same tag again replaces its context
    assert not any(b"NOUPDATE" in ln for ln in lines)
    lines = c.cmd("over", "UID SEARCH RETURN (UPDATE) ALL")
    assert lines == [
        b'* ESEARCH (TAG "over") UID ALL 1',
        b'* NO [NOUPDATE "over"] Too many search contexts (the limit is %d)' % MAX_CONTEXTS,
        b"over OK UID SEARCH completed",
    ]
    lines = c.cmd("p1", 'CANCELUPDATE "t1"')
    lines = c.cmd("p2", "UID SEARCH RETURN (PARTIAL 1:10 UPDATE) ALL")
    assert lines[1] == b'* NO [NOUPDATE "p2"] UPDATE with PARTIAL is not kept'
    fill(srv, ["b"])
    updates = esearch(c.cmd("n1", "NOOP"))
    assert len(updates) == MAX_CONTEXTS - 1 and all(u.endswith(b"UID ADDTO (0 2)") for u in updates)
    c.cmd("f1", "UID SEARCH RETURN (UPDATE) ALL")
    long = "L" * 300  # ESEARCH may send it as a literal; NOUPDATE's is a quoted string
    lines = c.cmd(long, "UID SEARCH RETURN (UPDATE) ALL")
    assert lines[0].startswith(b"* ESEARCH (TAG {300}\r\nLLL")
    assert lines[1].startswith(b'* NO [NOUPDATE "' + long.encode() + b'"] Too many search contexts')


@pytest.mark.parametrize(
    "text, reply",
    [
        ("CANCELUPDATE", b"BAD"),
        ("CANCELUPDATE u1", b"BAD"),
        ('CANCELUPDATE "u1"x', b"BAD"),
        ('CANCELUPDATE "' + "x" * 5000 + '"', b"NO No search context for tag 'xxxxx"),
        ("CANCELUPDATE " + '"a" ' * 100 + '"a"', b"BAD Too many tags"),
        ("SEARCH RETURN (UPDATE UPDATE PARTIAL) ALL", b"BAD"),
        ("THREAD RETURN (UPDATE) REFERENCES UTF-8 ALL", b"BAD"),
    ],
)
def test_hostile_input(srv, text, reply):
    c = selected(srv)
    assert c.cmd("h1", text)[-1].startswith(b"h1 " + reply)
    assert c.cmd("h2", "NOOP")[-1] == b"h2 OK NOOP completed"  # the session goes on


def apply_updates(order: list[int], line: bytes) -> list[int]:
    """A client's reading of RFC 5267 §4.3: each (position, UID) pair of REMOVEFROM, then of ADDTO, one
    after the other."""
    for name in (b"REMOVEFROM", b"ADDTO"):
        if name + b" (" not in line:
            continue
        pairs = line.split(name + b" (", 1)[1].split(b")", 1)[0].split()
        for pos, uid in zip(pairs[::2], pairs[1::2], strict=True):
            if name == b"ADDTO":
                order.insert(int(pos) - 1, int(uid))
            else:
                assert order.pop(int(pos) - 1) == int(uid)
    return order


def sorted_uids(c: Raw, tag: str, criteria: str) -> list[int]:
    line = esearch(c.cmd(tag, f"UID SORT RETURN (ALL) ({criteria}) UTF-8 ALL"))
    if not line or b" ALL " not in line[0]:
        return []
    out = []
    for part in line[0].split(b" ALL ")[1].split(b","):
        lo, _, hi = part.partition(b":")
        a, b = int(lo), int(hi or lo)
        out += list(range(a, b + 1) if a <= b else range(a, b - 1, -1))
    return out


@pytest.mark.parametrize("criteria", ["SUBJECT", "REVERSE SUBJECT"])
def test_sort_positions_among_many(srv, criteria):
    """40 sorted messages: new ones land between the samples the server compares them with (before the
    first, after the last, in the middle, two in one gap), and the client's list stays the server's."""
    fill(srv, [f"s{n:03d}" for n in range(0, 80, 2)])
    c, other = selected(srv), selected(srv)
    order = sorted_uids(c, "s0", criteria)
    assert len(order) == 40
    c.cmd("s1", f"UID SORT RETURN (UPDATE) ({criteria}) UTF-8 ALL")
    fill(srv, ["a first", "s041", "s043", "s999 last"])
    updates = esearch(c.cmd("n1", "NOOP"))
    assert len(updates) == 1 and b"ADDTO" in updates[0]
    order = apply_updates(order, updates[0])
    assert order == sorted_uids(c, "s2", criteria)
    other.cmd("o0", "NOOP")
    other.cmd("o1", "UID STORE 3,41,44 +FLAGS.SILENT (\\Deleted)")
    other.cmd("o2", "EXPUNGE")
    fill(srv, ["s005"])
    updates = esearch(c.cmd("n2", "NOOP"))
    assert len(updates) == 1 and b"REMOVEFROM" in updates[0] and b"ADDTO" in updates[0]
    assert apply_updates(order, updates[0]) == sorted_uids(c, "s3", criteria)


def test_updates_reach_an_idling_client(srv):
    fill(srv, ["a"])
    c = selected(srv)
    c.cmd("u1", "UID SEARCH RETURN (UPDATE) UNSEEN")
    c.send("i1 IDLE")
    assert c.line().startswith(b"+ ")
    fill(srv, ["b"])
    lines = [c.line() for _ in range(3)]  # EXISTS, RECENT (IMAP4rev1), then the update
    assert lines[0] == b"* 2 EXISTS" and lines[2] == b'* ESEARCH (TAG "u1") UID ADDTO (0 2)'
    c.send("DONE")
    assert c.until("i1")[-1] == b"i1 OK IDLE terminated"
