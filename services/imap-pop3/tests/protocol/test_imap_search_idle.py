"""SEARCH with every key (and CHARSET UTF-8), and IDLE: pushes the moment the store announces a change."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from imaptest import Raw, make_message

from mailflow.store.api import DeliverItem


def selected(srv, mailbox="INBOX") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("s0", f"SELECT {mailbox}")[-1].startswith(b"s0 OK")
    return c


@pytest.fixture
def mailbox(srv):
    def put(subject, when, flags=(), **kw):
        item = DeliverItem(
            key=subject,
            recipient="alice@example.test",
            body=make_message(subject, **kw),
            flags=flags,
            internal_date=when,
        )
        assert srv.call(srv.store.deliver([item]))[0].status == "stored"

    put(
        "alpha report",
        datetime(2020, 1, 10, tzinfo=UTC),
        ("\\Seen", "\\Answered"),
        date="Fri, 10 Jan 2020 08:00:00 +0000",
    )
    put(
        "beta",
        datetime(2021, 6, 1, tzinfo=UTC),
        ("\\Flagged", "$Work"),
        body="needle in body\n" * 20,
        Cc="dan@x.test",
    )
    put(
        "Grüße",
        datetime(2022, 3, 3, tzinfo=UTC),
        ("\\Deleted", "\\Draft"),
        from_="Jörg <joerg@x.test>",
        X_Spam="yes",
    )
    return srv


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("ALL", "1 2 3"),
        ("ANSWERED", "1"),
        ("UNANSWERED", "2 3"),
        ("DELETED", "3"),
        ("UNDELETED", "1 2"),
        ("DRAFT", "3"),
        ("UNDRAFT", "1 2"),
        ("FLAGGED", "2"),
        ("UNFLAGGED", "1 3"),
        ("SEEN", "1"),
        ("UNSEEN", "2 3"),
        ("KEYWORD $Work", "2"),
        ("UNKEYWORD $Work", "1 3"),
        ("RECENT", "1 2 3"),
        ("NEW", "2 3"),
        ("OLD", ""),
        ("SUBJECT report", "1"),
        ("FROM carol", "1 2"),
        ("TO alice", "1 2 3"),
        ("CC dan", "2"),
        ("BCC x", ""),
        ("HEADER X-Spam yes", "3"),
        ('HEADER X-Spam ""', "3"),
        ("BODY needle", "2"),
        ("TEXT report", "1"),
        ("BEFORE 1-Jan-2021", "1"),
        ("ON 1-Jun-2021", "2"),
        ("SINCE 1-Jun-2021", "2 3"),
        ("SENTBEFORE 11-Jan-2020", "1"),
        ("SENTON 10-Jan-2020", "1"),
        ("SENTSINCE 11-Jan-2020", "2 3"),
        ("LARGER 500", "2"),
        ("SMALLER 500", "1 3"),
        ("2:3", "2 3"),
        ("*", "3"),
        ("UID 1,3", "1 3"),
        ("UID 2:*", "2 3"),
        ("NOT SEEN", "2 3"),
        ("OR SEEN FLAGGED", "1 2"),
        ("(SEEN) (ANSWERED)", "1"),
        ("1:2 NOT 1", "2"),
        ("OR SUBJECT beta HEADER X-Spam yes", "2 3"),
        ("FLAGGED SUBJECT beta", "2"),
    ],
)
def test_search_keys(mailbox, criteria, expected):
    c = selected(mailbox)
    assert c.cmd("a1", f"SEARCH {criteria}") == [
        f"* SEARCH {expected}".rstrip().encode(),
        b"a1 OK SEARCH completed",
    ]


ADDRESSED = (
    b'From: "Doe, \\"JD\\" John" <John.Doe@Example.TEST>\r\n'
    b'To: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@muenchen.test>, "smith jr"@quoted.test,\r\n'
    b"  Undisclosed: alice@a.test, bob@b.test;\r\n"
    b"Cc: root@cron.test (Cron Daemon), Ann (the boss) Lee <ann@lee.test>\r\n"
    b"Bcc: =?iso-8859-1?q?Fran=E7ois?= <f@fr.test>\r\nSubject: addresses\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ('FROM "doe, \\"jd\\" john"', "2"),  # the display name, unquoted
        ('FROM "John <john.doe@EXAMPLE.test>"', "2"),  # name <local@domain>
        ("FROM carol", "1"),
        ("TO {13+}\r\nj\xc3\xb6rg m\xc3\xbcller", "2"),  # RFC 2047 in the name; literal, UTF-8 by default
        ('CHARSET UTF-8 TO "J\xc3\x96RG M\xc3\x9cLLER <joerg@"', "2"),
        ('TO "smith jr@quoted.test"', "2"),  # a quoted local part
        ("TO undisclosed", "2"),  # a group
        ("TO bob@b.test", "2"),  # one of several addresses
        ("TO alice@example.test", "1"),
        ('CC "cron daemon"', "2"),  # a comment as the name
        ('CC "ann lee"', "2"),  # a comment inside the name
        ('BCC "fran\xc3\xa7ois <f@"', "2"),
        ('HEADER FROM "doe, \\"jd\\" john"', ""),  # HEADER is the field's text only
        ("OR FROM jd TO jd", "2"),
        ("NOT TO bob", "1"),
    ],
)
def test_search_addresses_in_every_form(srv, criteria, expected):
    srv.deliver("alice@example.test", make_message("plain"))
    srv.deliver("alice@example.test", ADDRESSED)
    c = selected(srv)
    c.send(f"a1 SEARCH {criteria}".encode("latin-1"))
    assert c.until("a1") == [f"* SEARCH {expected}".rstrip().encode(), b"a1 OK SEARCH completed"]


def test_search_charset_utf8_and_uid_and_modseq(mailbox):
    c = selected(mailbox)
    subject = "Grüße".encode()
    c.send(f"a1 SEARCH CHARSET UTF-8 SUBJECT {{{len(subject)}}}")
    assert c.line().startswith(b"+ ")
    c.send_raw(subject + b"\r\n")
    assert c.until("a1")[0] == b"* SEARCH 3"
    assert c.cmd("a2", "SEARCH CHARSET UTF-8 FROM Jörg")[0] == b"* SEARCH 3"
    assert (
        c.cmd("a3", "SEARCH CHARSET ISO-2022-JP ALL")[-1]
        == b"a3 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
    )
    assert c.cmd("a4", "UID SEARCH FLAGGED")[0] == b"* SEARCH 2"
    line = c.cmd("a5", "SEARCH MODSEQ 1")[0]
    assert line.startswith(b"* SEARCH 1 2 3 (MODSEQ ")


def test_repeated_search_sees_arrivals_and_expunges_and_never_remembers_flags(mailbox):
    """A content-only search is remembered (only newer messages go to the store again); the answer
    must still follow new mail and expunges, and criteria about flags are asked afresh every time."""
    c = selected(mailbox)
    assert c.cmd("a1", "UID SEARCH HEADER X-Spam yes")[0] == b"* SEARCH 3"
    mailbox.deliver("alice@example.test", make_message("later", X_Spam="yes"))
    mailbox.deliver("alice@example.test", make_message("clean"))
    c.cmd("a2", "NOOP")  # the new messages become known to the session (EXISTS)
    assert c.cmd("a3", "UID SEARCH HEADER X-Spam yes")[0] == b"* SEARCH 3 4"
    assert c.cmd("a4", "SEARCH OR SUBJECT later SUBJECT clean")[0] == b"* SEARCH 4 5"
    c.cmd("a5", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    c.cmd("a6", "EXPUNGE")
    assert c.cmd("a7", "UID SEARCH HEADER X-Spam yes")[0] == b"* SEARCH 4"
    assert c.cmd("a8", "SEARCH HEADER X-Spam yes")[0] == b"* SEARCH 3"  # now message 3 of 4
    assert c.cmd("a9", "UID SEARCH UNSEEN SUBJECT later")[0] == b"* SEARCH 4"
    c.cmd("a10", "UID STORE 4 +FLAGS.SILENT (\\Seen)")
    assert c.cmd("a11", "UID SEARCH UNSEEN SUBJECT later")[0] == b"* SEARCH"


def test_the_view_and_the_store_answer_flag_criteria_alike(srv):
    """Flags-only criteria are answered from the session's view, others by the store: one evaluator
    (mailflow.store.search.matcher) either way, so keywords compare case-insensitively in both."""
    srv.deliver("alice@example.test", make_message("one"), flags=("$Label", "\\Seen"))
    srv.deliver("alice@example.test", make_message("two"))
    c = selected(srv)
    for criteria, expected in [
        ("KEYWORD $label", b"* SEARCH 1"),
        ("KEYWORD $LABEL", b"* SEARCH 1"),
        ("UNKEYWORD $label", b"* SEARCH 2"),
        ("NOT KEYWORD $lAbEl", b"* SEARCH 2"),
        ("OR KEYWORD $label UNSEEN", b"* SEARCH 1 2"),
        ("KEYWORD $label SEEN UID 1:*", b"* SEARCH 1"),
        ("UID 2:9 UNKEYWORD $label", b"* SEARCH 2"),
        ("UID 2:9 UID 1", b"* SEARCH"),
        ("UID 3:9", b"* SEARCH"),
        ("2:* ALL", b"* SEARCH 2"),
        ("1 NOT 2", b"* SEARCH 1"),
        ("OR UID 2 KEYWORD $label", b"* SEARCH 1 2"),
    ]:
        assert c.cmd("a1", f"UID SEARCH {criteria}")[0] == expected, criteria  # the view answers
        assert c.cmd("a2", f"UID SEARCH {criteria} SMALLER 1000000")[0] == expected, criteria  # the store


QP_MESSAGE = (
    b"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?iso-8859-1?q?K=F6ln?=\r\n"
    b"Date: Thu, 5 Nov 2020 00:30:00 +0100\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe vom Rhein\r\n"
)
B64_MESSAGE = (
    b"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: encoded\r\n"
    b"Date: Fri, 6 Nov 2020 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"bmVlZGxlIGluIGEgaGF5c3RhY2s=\r\n--b--\r\n"
)


def test_text_criteria_match_the_decoded_text_only(srv):
    """HEADER, BODY and TEXT compare with the decoded text: RFC 2047 words in headers, quoted-printable
    and base64 in body parts; never with the encoded bytes."""
    srv.deliver("alice@example.test", QP_MESSAGE)
    srv.deliver("alice@example.test", B64_MESSAGE)
    c = selected(srv)
    for criteria, expected in [
        ("CHARSET UTF-8 SUBJECT grüße", b"* SEARCH 1"),
        ("CHARSET UTF-8 SUBJECT köln", b"* SEARCH 1"),
        ("CHARSET UTF-8 TEXT GRÜSSE", b"* SEARCH 1"),  # case-insensitive beyond ASCII: ß is ss
        ("CHARSET UTF-8 BODY schöne", b"* SEARCH 1"),
        ("BODY needle", b"* SEARCH 2"),
        ("TEXT haystack", b"* SEARCH 2"),
        ("BODY C3", b"* SEARCH"),  # the quoted-printable form is not the text
        ('TEXT "=?utf-8?"', b"* SEARCH"),
        ("BODY bmVlZGxl", b"* SEARCH"),  # nor is the base64
    ]:
        assert c.cmd("a1", f"SEARCH {criteria}")[0] == expected, criteria


def test_date_criteria_use_the_days_the_client_is_shown(srv):
    """BEFORE/ON/SINCE: the internal date's day as FETCH INTERNALDATE shows it (+0000); SENTBEFORE/
    SENTON/SENTSINCE: the Date: header's day in its own zone (RFC 3501 §6.4.4: time and zone ignored)."""
    c = selected(srv)
    c.send(f'a1 APPEND INBOX "05-Nov-2020 00:30:00 +0100" {{{len(QP_MESSAGE)}+}}')
    c.send_raw(QP_MESSAGE + b"\r\n")
    assert c.until("a1")[-1].startswith(b"a1 OK")
    c.cmd("a2", "NOOP")
    assert b'INTERNALDATE "04-Nov-2020 23:30:00 +0000"' in c.cmd("a3", "FETCH 1 (INTERNALDATE)")[0]
    for criteria, expected in [
        ("ON 4-Nov-2020", b"* SEARCH 1"),
        ("ON 5-Nov-2020", b"* SEARCH"),
        ("BEFORE 5-Nov-2020", b"* SEARCH 1"),
        ("SINCE 5-Nov-2020", b"* SEARCH"),
        ("SENTON 5-Nov-2020", b"* SEARCH 1"),
        ("SENTON 4-Nov-2020", b"* SEARCH"),
        ("SENTSINCE 5-Nov-2020", b"* SEARCH 1"),
        ("SENTBEFORE 5-Nov-2020", b"* SEARCH"),
        ("NOT SENTBEFORE 5-Nov-2020", b"* SEARCH 1"),
    ]:
        assert c.cmd("a4", f"SEARCH {criteria}")[0] == expected, criteria


def wait_line(c: Raw, timeout: float = 2.0) -> bytes:
    c.sock.settimeout(timeout)
    try:
        return c.line()
    finally:
        c.sock.settimeout(10)


def test_idle_pushes_exists_flags_and_expunge_at_once(srv):
    srv.deliver("alice@example.test", make_message("old"))
    c = selected(srv)
    other = selected(srv)
    c.send("a1 IDLE")
    assert c.line() == b"+ idling"
    t0 = time.monotonic()
    srv.deliver("alice@example.test", make_message("new"))
    assert wait_line(c) == b"* 2 EXISTS"
    assert wait_line(c) == b"* 2 RECENT"
    assert time.monotonic() - t0 < 1.0
    other.cmd("o1", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert wait_line(c) == b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))"
    other.cmd("o2", "EXPUNGE")
    assert wait_line(c) == b"* 1 EXPUNGE"
    c.send("DONE")
    assert c.until("a1")[-1] == b"a1 OK IDLE terminated"
    assert c.cmd("a2", "NOOP") == [b"a2 OK NOOP completed"]


def test_idle_needs_done(srv):
    c = selected(srv)
    c.send("a1 IDLE")
    c.line()
    c.send("NOOP")
    assert c.until("a1")[-1] == b"a1 BAD Expected DONE"


def test_idle_in_authenticated_state_and_logout_after(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    c.send("a1 IDLE")
    assert c.line() == b"+ idling"
    c.send("DONE")
    assert c.until("a1")[-1] == b"a1 OK IDLE terminated"
    assert c.cmd("a2", "LOGOUT")[-1] == b"a2 OK LOGOUT completed"


def test_selected_mailbox_deleted_by_another_session_says_bye(srv):
    a = selected(srv, "Archive")
    b = selected(srv, "INBOX")
    b.cmd("b1", "DELETE Archive")
    lines = a.until("a1") if a.send("a1 NOOP") is None else []
    assert lines[0] == b"* BYE Selected mailbox was deleted, have to disconnect"
    assert a.closed()


def test_esearch_return_options(mailbox):
    """RFC 4731: SEARCH RETURN (MIN MAX COUNT ALL) and UID SEARCH answer with one ESEARCH line, sent even
    when nothing matches (then without MIN, MAX and ALL); RETURN () is RETURN (ALL); advertised."""
    c = selected(mailbox)
    assert b" ESEARCH" in c.cmd("c1", "CAPABILITY")[0]
    assert c.cmd("a1", "SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN") == [
        b'* ESEARCH (TAG "a1") MIN 2 MAX 3 COUNT 2 ALL 2:3',
        b"a1 OK SEARCH completed",
    ]
    assert c.cmd("a2", "SEARCH RETURN () ALL")[0] == b'* ESEARCH (TAG "a2") ALL 1:3'
    assert c.cmd("a3", "SEARCH RETURN (COUNT) CHARSET UTF-8 SUBJECT report")[0] == b'* ESEARCH (TAG "a3") COUNT 1'
    assert c.cmd("a4", "SEARCH RETURN (MIN MAX ALL COUNT) SUBJECT nothing")[0] == b'* ESEARCH (TAG "a4") COUNT 0'
    assert c.cmd("a5", "SEARCH RETURN (MAX) 1,3")[0] == b'* ESEARCH (TAG "a5") MAX 3'
    assert c.cmd("a6", "SEARCH RETURN (ALL) OR SEEN DELETED")[0] == b'* ESEARCH (TAG "a6") ALL 1,3'
    assert c.cmd("u1", "UID SEARCH RETURN (MIN ALL) NOT SEEN")[0] == b'* ESEARCH (TAG "u1") UID MIN 2 ALL 2:3'
    assert c.cmd("u2", "UID SEARCH RETURN (MIN) FROM nobody") == [b'* ESEARCH (TAG "u2") UID', b"u2 OK UID SEARCH completed"]
    assert c.cmd("b1", "SEARCH RETURN (FIRST) ALL")[-1].startswith(b"b1 BAD")
    assert c.cmd("b2", "SEARCH RETURN MIN ALL")[-1].startswith(b"b2 BAD")
    # with MODSEQ (RFC 4731 §3.2): the highest MODSEQ of the messages reported
    c.cmd("f1", "STORE 1 +FLAGS.SILENT (\\Flagged)")
    mod = {int(n): int(m) for n, m in re.findall(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", b"".join(c.cmd("f2", "FETCH 1:3 (MODSEQ)")))}
    assert c.cmd("m1", "SEARCH RETURN (MIN) MODSEQ 1")[0] == b'* ESEARCH (TAG "m1") MIN 1 MODSEQ %d' % mod[1]
    assert c.cmd("m2", "SEARCH RETURN (COUNT) MODSEQ 1")[0] == b'* ESEARCH (TAG "m2") COUNT 3 MODSEQ %d' % max(mod.values())
    assert c.cmd("m3", "SEARCH RETURN (MIN MAX) MODSEQ 1")[0] == b'* ESEARCH (TAG "m3") MIN 1 MAX 3 MODSEQ %d' % max(mod[1], mod[3])
