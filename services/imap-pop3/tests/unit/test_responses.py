"""Wire formatting: strings, dates, ENVELOPE and BODYSTRUCTURE from mailflow.mime, mailbox names in
modified UTF-7, and the tables that turn errors into replies (IMAP and POP3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow import mime
from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded, ServiceUnavailable, TempFailure
from mailflow.store.client import SessionExpired
from mailflow_imap_pop3.imap import errors, mutf7
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.lexer import ParseError
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.pop3 import replies as pop3_replies


@pytest.mark.parametrize(
    "value, wire",
    [
        ("plain", b'"plain"'),
        ('say "hi" \\ there', b'"say \\"hi\\" \\\\ there"'),
        ("", b'""'),
        ("J\xf6rg", b"{5}\r\nJ\xc3\xb6rg"),
        (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        ("x" * 300, b"{300}\r\n" + b"x" * 300),
    ],
)
def test_strings(value, wire):
    assert rsp.string(value) == wire


def test_nstring_and_flags_and_uid_sets():
    assert rsp.nstring(None) == b"NIL"
    assert rsp.flags(["\\Seen", "$Junk"]) == b"(\\Seen $Junk)"
    assert rsp.uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert rsp.uid_set([]) == ""


def test_internaldate():
    assert rsp.internaldate(datetime(2020, 11, 5, 9, 3, 7, tzinfo=timezone(timedelta(hours=-7)))) == (
        b'"05-Nov-2020 09:03:07 -0700"'
    )
    assert rsp.internaldate(datetime(2021, 1, 1, tzinfo=UTC)) == b'"01-Jan-2021 00:00:00 +0000"'


@pytest.mark.parametrize(
    "name, wire",
    [
        ("INBOX", b"INBOX"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("a&b", b"a&-b"),
        ("日本語", b"&ZeVnLIqe-"),
        ("~peter/mail/台北", b"~peter/mail/&U,BTFw-"),
    ],
)
def test_mutf7_vectors(name, wire):
    assert mutf7.encode(name) == wire
    assert mutf7.decode(wire) == name


@given(st.text(max_size=40))
def test_mutf7_round_trip(name):
    assert mutf7.decode(mutf7.encode(name)) == name


@pytest.mark.parametrize("bad", [b"&", b"a&Jjo", b"&AGE-", b"&ZeVnLIqe", b"&Zev/LIqe-"])
def test_mutf7_refuses_junk(bad):
    with pytest.raises(ValueError):
        mutf7.decode(bad)


MULTIPART = (
    b'From: "Doe, John" <john@x.test>\r\nTo: a@y.test, Group: b@y.test, c@y.test;\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n'
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@x.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
    b"hello\r\nworld\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: z@z.test\r\n\r\ninner body\r\n"
    b'--b1\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b1--\r\n"
)


def test_envelope_with_group_and_quoted_name():
    env = rsp.envelope(mime.parse(MULTIPART).envelope)
    assert env.startswith(
        b'("Fri, 27 Nov 2026 10:00:00 +0000" "=?utf-8?q?caf=C3=A9?=" (("Doe, John" NIL "john" "x.test"))'
    )
    assert (
        b'((NIL NIL "a" "y.test")(NIL NIL "Group" NIL)(NIL NIL "b" "y.test")(NIL NIL "c" "y.test")(NIL NIL NIL NIL))'
        in env
    )
    assert env.endswith(b' NIL NIL NIL "<1@x.test>")')


def test_bodystructure_multipart_with_message_and_attachment():
    p = mime.parse(MULTIPART)
    full = rsp.body_structure(p.body, extended=True)
    assert full.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 2 NIL NIL NIL NIL)')
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 44 (NIL "inner" ((NIL NIL "z" "z.test"))' in full
    assert (
        b'("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 4 NIL ("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL)'
        in full
    )
    assert full.endswith(b' "MIXED" ("BOUNDARY" "b1") NIL NIL NIL)')
    basic = rsp.body_structure(p.body, extended=False)
    assert basic.endswith(b' "MIXED")') and b"ATTACHMENT" not in basic
    assert full.count(b"(") == full.count(b")")


def test_reply_lines():
    assert Reply("NO", "Nope", "CANNOT").line("a1") == b"a1 NO [CANNOT] Nope\r\n"
    assert rsp.tagged("a2", "OK", "done") == b"a2 OK done\r\n"


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (errors.no("x", "TRYCREATE"), "NO", "TRYCREATE"),
        (ParseError("bad", "a1"), "BAD", None),
        (ParseError("cs", "a1", "NO", "BADCHARSET"), "NO", "BADCHARSET"),
        (NotFound("x"), "NO", "NONEXISTENT"),
        (Conflict("x"), "NO", "ALREADYEXISTS"),
        (Invalid("bad name"), "NO", "CANNOT"),
        (QuotaExceeded(), "NO", "OVERQUOTA"),
        (ServiceUnavailable("db down at 10.0.0.5"), "NO", "UNAVAILABLE"),
        (TimeoutError(), "NO", "UNAVAILABLE"),
        (ConnectionResetError(), "NO", "UNAVAILABLE"),
        (KeyError("boom"), "NO", "SERVERBUG"),
        (SessionExpired("expired"), "BYE", None),
    ],
)
def test_imap_to_reply(exc, status, code):
    reply = errors.to_reply(exc, "ref1")
    assert (reply.status, reply.code) == (status, code)
    assert "10.0.0.5" not in reply.text and "Traceback" not in reply.text
    if code == "SERVERBUG":
        assert "ref1" in reply.text


@pytest.mark.parametrize(
    "exc, start",
    [
        (TempFailure(b"-ERR [SYS/TEMP] x\r\n"), b"-ERR [SYS/TEMP] x"),
        (ServiceUnavailable("db at 10.0.0.5"), b"-ERR [SYS/TEMP] Service"),
        (TimeoutError(), b"-ERR [SYS/TEMP]"),
        (ValueError("boom"), b"-ERR [SYS/TEMP] Internal error, ref r2"),
        (SessionExpired("expired"), b"-ERR [SYS/TEMP] Session expired"),
    ],
)
def test_pop3_to_reply(exc, start):
    reply = pop3_replies.to_reply(exc, "r2")
    assert reply.startswith(start) and reply.endswith(b"\r\n") and b"10.0.0.5" not in reply


@pytest.mark.parametrize(
    "nodes, wire",
    [
        ([], b"* THREAD"),
        ([(2, 0), (3, 0), (6, 1), (4, 2), (23, 3), (44, 2), (7, 3), (96, 4)], b"* THREAD (2)(3 6 (4 23)(44 7 96))"),  # RFC 5256 §5
        ([(0, 0), (3, 1), (5, 1), (1, 0)], b"* THREAD ((3)(5))(1)"),  # a dummy root
        ([(6, 0), (3, 1), (5, 1)], b"* THREAD (6 (3)(5))"),
        ([(1, 0), (2, 1), (3, 1), (4, 2)], b"* THREAD (1 (2)(3 4))"),
    ],
)
def test_thread_response(nodes, wire):
    assert rsp.thread(nodes) == wire + b"\r\n"


def test_thread_response_deep_and_malformed():
    chain = [(i + 1, i) for i in range(50_000)]  # no recursion, nothing nested for a chain
    assert rsp.thread(chain) == b"* THREAD (" + b" ".join(b"%d" % (i + 1) for i in range(50_000)) + b")\r\n"
    with pytest.raises(ValueError):
        rsp.thread([(1, 0), (2, 2)])
