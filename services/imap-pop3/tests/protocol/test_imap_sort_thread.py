"""SORT, THREAD (RFC 5256), ESORT (RFC 5267 §3), PARTIAL (RFC 9394) and SEARCHRES (RFC 5182) over a real
socket, the real server over the real mailbox-store, as transcripts; and hostile input: deep and
looping References, huge subjects, thousands of messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from imaptest import Raw

from mailflow.store.api import DeliverItem


def selected(srv, mailbox="INBOX") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("s0", f"SELECT {mailbox}")[-1].startswith(b"s0 OK")
    return c


def message(subject: str, date: str | None, mid: str, refs: str = "", sender: str = "carol@x.test",
            to: str = "alice@example.test", cc: str = "", body: str = "hi") -> bytes:  # fmt: skip
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: <{mid}>"]
    head += [f"Date: {date}"] if date else []
    head += [f"References: {refs}"] if refs else []
    head += [f"Cc: {cc}"] if cc else []
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def put(srv, items: list[bytes], start: int = 1) -> None:
    delivered = [
        DeliverItem(key=f"k{start + i}-{len(raw)}", recipient="alice@example.test", body=raw,
                    internal_date=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start + i))
        for i, raw in enumerate(items)
    ]  # fmt: skip
    for i in range(0, len(delivered), 500):
        assert {r.status for r in srv.call(srv.store.deliver(delivered[i : i + 500]))} == {"stored"}


@pytest.fixture
def mailbox(srv):
    put(
        srv,
        [
            message(
                "Re: plans", "Tue, 01 Dec 2026 10:00:00 +0000", "b@x", "<a@x>", "zed@x.test", cc="amy@x.test"
            ),  # 1
            message(
                "plans", "Mon, 30 Nov 2026 10:00:00 +0000", "a@x", sender="Bob <bob@x.test>", body="x" * 500
            ),  # 2
            message("[list] Fwd: budget", None, "c@x", sender="amy@x.test", to="zoe@x.test"),  # 3: no Date
            message(
                "Re: plans", "Wed, 02 Dec 2026 10:00:00 +0100", "d@x", "<a@x> <b@x>", "Al <al@x.test>"
            ),  # 4
            message("budget (fwd)", "Thu, 03 Dec 2026 10:00:00 +0000", "e@x", "<zz@x>", "bob@x.test"),  # 5
        ],
    )
    return srv


def test_capabilities(srv):
    c = selected(srv)
    caps = c.cmd("c1", "CAPABILITY")[0].split()
    for cap in (
        b"SORT",
        b"SORT=DISPLAY",
        b"THREAD=ORDEREDSUBJECT",
        b"THREAD=REFERENCES",
        b"ESORT",
        b"PARTIAL",
        b"SEARCHRES",
    ):
        assert cap in caps


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("(SUBJECT) UTF-8 ALL", "3 5 1 2 4"),  # BUDGET x2, then PLANS x3: ties in mailbox order
        ("(DATE) UTF-8 ALL", "3 2 1 4 5"),  # 3 has no Date: its internal date (2026-01-01) is earliest
        ("(REVERSE DATE) UTF-8 ALL", "5 4 1 2 3"),
        ("(ARRIVAL) US-ASCII ALL", "1 2 3 4 5"),
        ("(REVERSE ARRIVAL) UTF-8 ALL", "5 4 3 2 1"),
        ("(FROM) UTF-8 ALL", "4 3 2 5 1"),  # AL AMY BOB BOB ZED
        ("(TO) UTF-8 ALL", "1 2 4 5 3"),
        ("(CC) UTF-8 ALL", "2 3 4 5 1"),  # no Cc sorts first ("")
        ("(SIZE) UTF-8 ALL", "3 5 4 1 2"),
        ("(REVERSE SIZE) UTF-8 ALL", "2 1 4 5 3"),
        ("(SUBJECT REVERSE DATE) UTF-8 ALL", "5 3 4 1 2"),
        ("(DISPLAYFROM) UTF-8 ALL", "4 3 2 5 1"),  # "al", "amy@x.test", "bob", "bob@x.test", "zed@..."
        ("(SUBJECT) UTF-8 FROM bob", "5 2"),  # the criteria are SEARCH's
        ("(SUBJECT) UTF-8 2:4", "3 2 4"),
        ("(DATE) UTF-8 SUBJECT nothing", ""),
    ],
)
def test_sort(mailbox, criteria, expected):
    c = selected(mailbox)
    assert c.cmd("a1", f"SORT {criteria}") == [
        f"* SORT {expected}".rstrip().encode(),
        b"a1 OK SORT completed",
    ]


def test_uid_sort_and_errors(mailbox):
    c = selected(mailbox)
    c.cmd("e1", "UID STORE 1:2 +FLAGS (\\Deleted)")
    c.cmd("e2", "EXPUNGE")  # UIDs 3 4 5 are now 1 2 3
    assert c.cmd("a1", "UID SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 5 4"
    assert c.cmd("a2", "SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 1 3 2"
    assert c.cmd("b1", "SORT (COLOUR) UTF-8 ALL")[-1].startswith(b"b1 BAD")
    assert c.cmd("b2", "SORT () UTF-8 ALL")[-1].startswith(b"b2 BAD")
    assert c.cmd("b3", "SORT (SUBJECT) ALL")[-1].startswith(b"b3 NO [BADCHARSET")  # the charset is required
    assert c.cmd("b4", "SORT (SUBJECT) KOI8-R ALL")[-1].startswith(b"b4 NO [BADCHARSET (UTF-8 US-ASCII)]")
    assert c.cmd("b5", "SORT SUBJECT UTF-8 ALL")[-1].startswith(b"b5 BAD")
    assert c.cmd("b6", "THREAD MAGIC UTF-8 ALL")[-1].startswith(b"b6 BAD")
    assert c.cmd("b7", "SORT (REVERSE) UTF-8 ALL")[-1].startswith(b"b7 BAD")


def test_sort_in_an_empty_mailbox(srv):
    c = selected(srv)
    assert c.cmd("a1", "SORT (DATE) UTF-8 ALL") == [b"* SORT", b"a1 OK SORT completed"]
    assert c.cmd("a2", "THREAD REFERENCES UTF-8 ALL") == [b"* THREAD", b"a2 OK THREAD completed"]
    assert c.cmd("a3", "SORT RETURN (COUNT) (DATE) UTF-8 ALL")[0] == b'* ESEARCH (TAG "a3") COUNT 0'


def test_thread(mailbox):
    c = selected(mailbox)
    # REFERENCES: 2 <- 1 <- 4 (References); 3 and 5 share the base subject BUDGET, 5's parent is
    # missing (its dummy, with one child, is pruned) and both are forwards: a dummy holds the two.
    # Threads by date: 3 (its internal date, January) first.
    assert c.cmd("t1", "THREAD REFERENCES UTF-8 ALL") == [
        b"* THREAD ((3)(5))(2 1 4)",
        b"t1 OK THREAD completed",
    ]
    # ORDEREDSUBJECT: by base subject, the first (by sent date) the parent of the others
    assert c.cmd("t2", "THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (3 5)(2 (1)(4))"
    assert c.cmd("t3", "UID THREAD REFERENCES US-ASCII NOT 1")[0] == b"* THREAD ((3)(5))(2 4)"
    assert c.cmd("t4", "THREAD REFERENCES UTF-8 SUBJECT budget")[0] == b"* THREAD ((3)(5))"
    # a subject that is no reply takes the replies of its subject under it
    put(mailbox, [message("budget", "Fri, 04 Dec 2026 10:00:00 +0000", "f@x")], start=6)
    c.cmd("n1", "NOOP")
    assert c.cmd("t5", "THREAD REFERENCES UTF-8 SUBJECT budget")[0] == b"* THREAD (6 (3)(5))"


def test_esort_and_partial(mailbox):
    c = selected(mailbox)
    assert c.cmd("a1", "SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL")[0] == (
        b'* ESEARCH (TAG "a1") MIN 5 MAX 3 COUNT 5 ALL 5,4,1:3'  # in sort order
    )
    # MIN and MAX of a SORT are its first and last message (RFC 5267: "the lowest/highest sorted"), as Dovecot
    assert c.cmd("a2", "SORT RETURN () (ARRIVAL) UTF-8 ALL")[0] == b'* ESEARCH (TAG "a2") ALL 1:5'
    assert c.cmd("s1", "SORT RETURN (SAVE MAX) (REVERSE DATE) UTF-8 ALL") == [b'* ESEARCH (TAG "s1") MAX 3', b"s1 OK SORT completed"]
    assert c.cmd("s2", "FETCH $ (UID)")[:-1] == [b"* 3 FETCH (UID 3)"]
    assert (
        c.cmd("a3", "UID SORT RETURN (COUNT) (DATE) UTF-8 FROM bob")[0] == b'* ESEARCH (TAG "a3") UID COUNT 2'
    )
    assert c.cmd("p1", "SORT RETURN (PARTIAL 1:2) (REVERSE DATE) UTF-8 ALL")[0] == (
        b'* ESEARCH (TAG "p1") PARTIAL (1:2 5,4)'
    )
    assert c.cmd("p2", "SORT RETURN (PARTIAL -1:-2) (REVERSE DATE) UTF-8 ALL")[0] == (
        b'* ESEARCH (TAG "p2") PARTIAL (-1:-2 2:3)'
    )
    assert (
        c.cmd("p3", "SEARCH RETURN (PARTIAL 2:3 COUNT) ALL")[0]
        == b'* ESEARCH (TAG "p3") COUNT 5 PARTIAL (2:3 2:3)'
    )
    assert (
        c.cmd("p4", "UID SEARCH RETURN (PARTIAL 7:9) ALL")[0] == b'* ESEARCH (TAG "p4") UID PARTIAL (7:9 NIL)'
    )
    assert c.cmd("p5", "SEARCH RETURN (PARTIAL 3:1) ALL")[0] == b'* ESEARCH (TAG "p5") PARTIAL (1:3 1:3)'
    assert c.cmd("b1", "SEARCH RETURN (PARTIAL 1:-3) ALL")[-1].startswith(b"b1 BAD")
    assert c.cmd("b2", "SEARCH RETURN (PARTIAL 0:3) ALL")[-1].startswith(b"b2 BAD")
    assert c.cmd("b3", "SEARCH RETURN (PARTIAL) ALL")[-1].startswith(b"b3 BAD")


def test_searchres(mailbox):
    """RFC 5182: SAVE alone answers nothing but OK; $ then names those messages in SEARCH, FETCH, STORE,
    UID commands; a new SELECT empties it; expunged messages leave it."""
    c = selected(mailbox)
    assert c.cmd("a0", "FETCH $ (UID)") == [b"a0 OK FETCH completed"]  # empty before any SAVE
    assert c.cmd("a1", "SEARCH RETURN (SAVE) FROM bob") == [b"a1 OK SEARCH completed"]
    assert c.cmd("a2", "FETCH $ (UID)")[:-1] == [b"* 2 FETCH (UID 2)", b"* 5 FETCH (UID 5)"]
    assert c.cmd("a3", "UID SEARCH UID $")[0] == b"* SEARCH 2 5"
    assert c.cmd("a4", "SEARCH $ SUBJECT plans")[0] == b"* SEARCH 2"
    assert c.cmd("a5", "SEARCH RETURN (SAVE MIN) $")[0:1] == [b'* ESEARCH (TAG "a5") MIN 2']
    assert c.cmd("a6", "UID FETCH $ (UID)")[:-1] == [b"* 2 FETCH (UID 2)"]  # only MIN was saved
    c.cmd("a7", "SORT RETURN (SAVE) (REVERSE DATE) UTF-8 ALL")
    c.cmd("a8", "STORE $ +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a9", "SEARCH DELETED")[0] == b"* SEARCH 1 2 3 4 5"
    c.cmd("b0", "SEARCH RETURN (SAVE) 1:2")
    c.cmd("b1", "EXPUNGE")
    assert c.cmd("b2", "FETCH $ (UID)") == [b"b2 OK FETCH completed"]  # gone with the messages


def test_sort_save_reads_dollar_before_replacing_it(mailbox):
    """RFC 5182 §2.1: `$` in the criteria is the result before this command's SAVE."""
    c = selected(mailbox)
    c.cmd("a1", "SEARCH RETURN (SAVE) 1:2")
    assert c.cmd("a2", "UID SORT RETURN (SAVE ALL) (REVERSE ARRIVAL) UTF-8 $")[0] == b'* ESEARCH (TAG "a2") UID ALL 2,1'
    assert c.cmd("a3", "SEARCH $")[0] == b"* SEARCH 1 2"


def test_searchres_reset_by_select(mailbox):
    c = selected(mailbox)
    c.cmd("a1", "SEARCH RETURN (SAVE) ALL")
    assert c.cmd("a2", "SELECT INBOX")[-1].startswith(b"a2 OK")
    assert c.cmd("a3", "SEARCH $") == [b"* SEARCH", b"a3 OK SEARCH completed"]


def test_hostile_references_and_subjects(srv):
    """A reply chain 2,000 deep, a References loop, a message that names itself, 300 references on one
    message, a 60 KiB subject: THREAD answers, flat where nothing branches."""
    chain = [message("Re: deep", None, f"m{i}@x", " ".join(f"<m{j}@x>" for j in range(max(0, i - 30), i)))
             for i in range(2000)]  # fmt: skip
    put(srv, chain)
    put(
        srv,
        [
            message("loop", None, "l1@x", "<l2@x>"),
            message("loop", None, "l2@x", "<l1@x>"),
            message("self", None, "s@x", "<s@x>"),
            message("many", None, "many@x", " ".join(f"<r{i}@x>" for i in range(300))),
            message("Re: " * 3000 + "x" * 50_000, None, "huge@x"),
        ],
        start=2001,
    )
    c = selected(srv)
    reply = c.cmd("t1", "THREAD REFERENCES UTF-8 ALL")
    assert reply[-1] == b"t1 OK THREAD completed"
    assert reply[0].startswith(b"* THREAD (" + b" ".join(b"%d" % i for i in range(1, 2001)) + b")")
    for n in (2001, 2002, 2003, 2004, 2005):
        assert b"%d" % n in reply[0]
    assert c.cmd("t2", "SORT (SUBJECT) UTF-8 ALL")[-1] == b"t2 OK SORT completed"
    assert c.cmd("t3", "THREAD ORDEREDSUBJECT UTF-8 ALL")[-1] == b"t3 OK THREAD completed"


def test_imaplib_sort_and_thread(mailbox):
    """Python's imaplib (its own SORT and THREAD calls and response parsing). mutt cannot take part: it
    sorts and threads on its side and never sends SORT or THREAD (no such command in its binary)."""
    import imaplib

    m = imaplib.IMAP4("127.0.0.1", mailbox.port("imap"))
    try:
        m.login("alice@example.test", "alice-pw")
        m.select("INBOX")
        assert m.sort("(REVERSE DATE)", "UTF-8", "ALL") == ("OK", [b"5 4 1 2 3"])
        assert m.uid("SORT", "(SUBJECT)", "UTF-8", "FROM", "bob") == ("OK", [b"5 2"])
        assert m.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"((3)(5))(2 1 4)"])
        assert m.uid("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL") == ("OK", [b"(3 5)(2 (1)(4))"])
    finally:
        m.logout()
