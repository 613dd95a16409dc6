"""mailflow.mime: envelope, body structure and part offsets from raw bytes, and BODY[section] as the store
cuts it with them (mailflow_mailbox_store.sections).

Messages are written out line by line, so every expected offset and slice can be checked by eye.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow import mime
from mailflow.mime import Address, BodyPart
from mailflow_mailbox_store.sections import header_fields, section

CRLF = b"\r\n"


def msg(*lines: bytes, eol: bytes = CRLF) -> bytes:
    return b"".join(line + eol for line in lines)


def walk(part: BodyPart):
    yield part
    for child in part.parts:
        yield from walk(child)


def addr(name, mailbox, host, adl=None) -> Address:
    return Address(name, adl, mailbox, host)


GROUP_END = Address(None, None, None, None)


# ---------------------------------------------------------------------------------------------------
# Real-world shaped messages

PLAIN_HEADER = msg(
    b"Return-Path: <alice@example.org>",
    b"Received: from mail.example.org by mx.example.com;",
    b"\tMon, 1 Jan 2024 10:00:00 +0000",
    b"From: Alice Example <alice@example.org>",
    b"To: Bob <bob@example.com>",
    b"Subject: Lunch",
    b"Date: Mon, 1 Jan 2024 09:59:57 +0000",
    b"Message-ID: <lunch.1@example.org>",
    b"",
)
PLAIN = PLAIN_HEADER + msg(b"Noon at the usual place?", b"", b"-- ", b"Alice")


def test_plain_text_structure_and_offsets():
    p = mime.parse(PLAIN)
    b = p.body
    assert (b.type, b.subtype, b.params, b.encoding) == ("TEXT", "PLAIN", (("CHARSET", "us-ascii"),), "7BIT")
    assert (b.start, b.body_start, b.end) == (0, len(PLAIN_HEADER), len(PLAIN))
    assert b.size == len(b"Noon at the usual place?\r\n\r\n-- \r\nAlice\r\n") == 40
    assert b.lines == 4
    assert b.parts == () and b.envelope is None and b.disposition is None


def test_plain_text_envelope_and_headers():
    p = mime.parse(PLAIN)
    e = p.envelope
    assert e.date == "Mon, 1 Jan 2024 09:59:57 +0000"
    assert e.subject == "Lunch"
    assert e.from_ == (addr("Alice Example", "alice", "example.org"),)
    assert e.sender == e.from_ and e.reply_to == e.from_  # RFC 3501: absent Sender/Reply-To = From
    assert e.to == (addr("Bob", "bob", "example.com"),)
    assert e.cc == () and e.bcc == () and e.in_reply_to is None
    assert e.message_id == "<lunch.1@example.org>"
    assert p.headers[:2] == (
        ("return-path", "<alice@example.org>"),
        ("received", "from mail.example.org by mx.example.com;\tMon, 1 Jan 2024 10:00:00 +0000"),
    )
    assert [name for name, _ in p.headers] == [
        "return-path", "received", "from", "to", "subject", "date", "message-id",
    ]  # fmt: skip


def test_plain_text_sections():
    p = mime.parse(PLAIN)
    body = b"Noon at the usual place?\r\n\r\n-- \r\nAlice\r\n"
    assert section(PLAIN, p, "") == PLAIN
    assert section(PLAIN, p, "HEADER") == PLAIN_HEADER
    assert section(PLAIN, p, "TEXT") == body
    assert section(PLAIN, p, "1") == body  # part 1 of a non-multipart message is its body
    assert section(PLAIN, p, "1.MIME") == PLAIN_HEADER
    assert section(PLAIN, p, "2") == b""
    assert section(PLAIN, p, "1.1") == b""
    assert section(PLAIN, p, "1.HEADER") == b""  # only a message/rfc822 part has a HEADER
    assert section(PLAIN, p, "HEADER.FIELDS (SUBJECT FROM)") == msg(
        b"From: Alice Example <alice@example.org>", b"Subject: Lunch", b""
    )
    assert section(PLAIN, p, "HEADER.FIELDS (RECEIVED)") == msg(
        b"Received: from mail.example.org by mx.example.com;", b"\tMon, 1 Jan 2024 10:00:00 +0000", b""
    )
    assert section(PLAIN, p, "HEADER.FIELDS.NOT (RETURN-PATH RECEIVED MESSAGE-ID DATE)") == msg(
        b"From: Alice Example <alice@example.org>", b"To: Bob <bob@example.com>", b"Subject: Lunch", b""
    )
    assert section(PLAIN, p, "HEADER.FIELDS (X-NOT-THERE)") == CRLF


ALT_HEADER = msg(
    b"From: a@example.org",
    b"Subject: Alternatives",
    b'Content-Type: multipart/alternative; boundary="=_alt"',
    b"",
)
ALT_PART1_HEADER = msg(b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit", b"")
ALT_PART2_HEADER = msg(b'Content-Type: text/html; charset="utf-8"', b"")
ALT = (
    ALT_HEADER
    + msg(b"This is a MIME message.", b"--=_alt")
    + ALT_PART1_HEADER
    + msg(b"Caf\xc3\xa9 at noon.", b"--=_alt")
    + ALT_PART2_HEADER
    + msg(b"<p>Caf&eacute;</p>", b"<p>at noon.</p>", b"--=_alt--", b"epilogue")
)


def test_multipart_alternative():
    p = mime.parse(ALT)
    top = p.body
    assert (top.type, top.subtype, top.params) == ("MULTIPART", "ALTERNATIVE", (("BOUNDARY", "=_alt"),))
    assert (top.start, top.body_start, top.end) == (0, len(ALT_HEADER), len(ALT))
    plain, html = top.parts
    plain_start = ALT.index(b"Content-Type: text/plain")
    assert (plain.start, plain.body_start) == (plain_start, plain_start + len(ALT_PART1_HEADER))
    assert plain.end == ALT.index(
        b"\r\n--=_alt\r\nContent-Type: text/html"
    )  # the CRLF goes with the boundary
    assert (plain.type, plain.subtype, plain.params, plain.encoding) == (
        "TEXT", "PLAIN", (("CHARSET", "utf-8"),), "8BIT",
    )  # fmt: skip
    assert (plain.size, plain.lines) == (len(b"Caf\xc3\xa9 at noon."), 1)
    assert (html.subtype, html.params, html.encoding, html.lines) == (
        "HTML",
        (("CHARSET", "utf-8"),),
        "7BIT",
        2,
    )
    assert section(ALT, p, "1") == b"Caf\xc3\xa9 at noon."
    assert section(ALT, p, "2") == b"<p>Caf&eacute;</p>\r\n<p>at noon.</p>"
    assert section(ALT, p, "1.MIME") == ALT_PART1_HEADER
    assert section(ALT, p, "2.MIME") == ALT_PART2_HEADER
    assert section(ALT, p, "TEXT") == ALT[len(ALT_HEADER) :]
    assert section(ALT, p, "3") == b""


PDF = b"%PDF-1.4 fake\n" * 10
PDF_B64 = base64.encodebytes(PDF).replace(b"\n", CRLF)  # ends with CRLF, like a real encoder
MIXED = (
    msg(
        b"From: a@example.org",
        b"Content-Type: multipart/mixed;",
        b' boundary="b-mixed"',
        b"",
        b"--b-mixed",
        b"Content-Type: text/plain",
        b"",
        b"See attached.",
        b"--b-mixed",
        b"Content-Type: application/pdf; name*0*=utf-8''r%C3%A9sum; name*1=\"\xc3\xa9 2024.pdf\"",
        b"Content-Disposition: attachment;",
        b"\tfilename*=utf-8''r%C3%A9sum%C3%A9.pdf; size=140",
        b"Content-Transfer-Encoding: BASE64",
        b"Content-ID: <pdf1@example.org>",
        b"Content-Description: CV",
        b"Content-Language: en, fr",
        b"Content-Location: https://example.org/cv.pdf",
        b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",
        b"",
    )
    + PDF_B64
    + msg(b"--b-mixed--")
)


def test_multipart_mixed_with_attachment():
    p = mime.parse(MIXED)
    text, pdf = p.body.parts
    assert text.params == (("CHARSET", "us-ascii"),)  # text/* without charset: RFC 2045 default
    assert section(MIXED, p, "1") == b"See attached."
    assert (pdf.type, pdf.subtype, pdf.encoding) == ("APPLICATION", "PDF", "BASE64")
    # RFC 2231: continuations joined; an extended piece keeps the name "NAME*" and %-encodes the rest
    assert pdf.params == (("NAME*", "utf-8''r%C3%A9sum%C3%A9%202024.pdf"),)
    assert pdf.disposition == ("ATTACHMENT", (("FILENAME*", "utf-8''r%C3%A9sum%C3%A9.pdf"), ("SIZE", "140")))
    assert (pdf.id, pdf.description, pdf.md5) == ("<pdf1@example.org>", "CV", "Q2hlY2sgSW50ZWdyaXR5IQ==")
    assert (pdf.language, pdf.location) == (("en", "fr"), "https://example.org/cv.pdf")
    assert pdf.lines is None  # only text/* and message/rfc822 have lines
    assert section(MIXED, p, "2") == PDF_B64[:-2]  # the last CRLF belongs to the close delimiter
    assert pdf.size == len(PDF_B64) - 2
    assert base64.b64decode(section(MIXED, p, "2")) == PDF
    assert pdf.end == len(MIXED) - len(b"\r\n--b-mixed--\r\n")
    assert p.body.end == len(MIXED)


def test_extended_continuation_after_a_plain_first_piece_gets_an_empty_charset():
    raw = msg(b'Content-Type: text/plain; title*0="plain "; title*1*=%E2%82%AC', b"", b"x")
    assert mime.parse(raw).body.params == (("TITLE*", "''plain%20%E2%82%AC"), ("CHARSET", "us-ascii"))


def test_parameters_without_extended_pieces_join_plainly():
    raw = msg(b'Content-Type: application/x-thing; Name*0="long "; name*1=name.bin; X="a\\"b"', b"", b"x")
    assert mime.parse(raw).body.params == (("NAME", "long name.bin"), ("X", 'a"b'))


NESTED = msg(
    b"Content-Type: multipart/mixed; boundary=outer",
    b"",
    b"--outer",
    b"Content-Type: multipart/alternative; boundary=inner",
    b"",
    b"--inner",
    b"",
    b"plain body",
    b"--inner",
    b"Content-Type: text/html",
    b"",
    b"<b>html body</b>",
    b"--inner--",
    b"",
    b"--outer",
    b"Content-Type: image/png",
    b"Content-Disposition: inline",
    b"",
    b"PNGDATA",
    b"--outer--",
)


def test_nested_multipart():
    p = mime.parse(NESTED)
    alt, png = p.body.parts
    assert (alt.type, alt.subtype) == ("MULTIPART", "ALTERNATIVE")
    assert [(c.type, c.subtype) for c in alt.parts] == [("TEXT", "PLAIN"), ("TEXT", "HTML")]
    assert section(NESTED, p, "1.1") == b"plain body"
    assert section(NESTED, p, "1.1.MIME") == CRLF  # an empty header: just the blank line
    assert section(NESTED, p, "1.2") == b"<b>html body</b>"
    # a multipart's body runs from its first boundary to the end of its epilogue
    assert section(NESTED, p, "1") == msg(
        b"--inner", b"", b"plain body", b"--inner", b"Content-Type: text/html", b"", b"<b>html body</b>",
        b"--inner--",
    )  # fmt: skip
    assert section(NESTED, p, "1.MIME") == msg(
        b"Content-Type: multipart/alternative; boundary=inner", b""
    )
    assert section(NESTED, p, "2") == b"PNGDATA"
    assert png.disposition == ("INLINE", ())
    assert section(NESTED, p, "1.3") == b"" and section(NESTED, p, "3") == b""
    assert section(NESTED, p, "2.1") == b""


INNER_MESSAGE = msg(
    b'From: "Carol C." <carol@example.net>',
    b"To: dave@example.net",
    b"Subject: Original",
    b"Date: Sun, 31 Dec 2023 12:00:00 +0100",
    b"Message-ID: <orig@example.net>",
    b"Content-Type: multipart/mixed; boundary=enc",
    b"",
    b"--enc",
    b"",
    b"inner text",
    b"--enc",
    b"Content-Type: application/octet-stream",
    b"",
    b"\x00\x01\x02",
    b"--enc--",
)
FORWARD = (
    msg(
        b"From: bob@example.com",
        b"Subject: Fwd: Original",
        b"Content-Type: multipart/mixed; boundary=fwd",
        b"",
        b"--fwd",
        b"",
        b"See below.",
        b"--fwd",
        b"Content-Type: message/rfc822",
        b"",
    )
    + INNER_MESSAGE
    + msg(b"--fwd--")
)


def test_message_rfc822_attachment_with_its_own_multipart():
    p = mime.parse(FORWARD)
    note, fwd = p.body.parts
    assert (fwd.type, fwd.subtype) == ("MESSAGE", "RFC822")
    assert fwd.body_start == FORWARD.index(INNER_MESSAGE)
    assert fwd.end == fwd.body_start + len(INNER_MESSAGE) - 2  # the CRLF before "--fwd--" is the boundary's
    assert fwd.lines == INNER_MESSAGE.count(b"\n")
    assert fwd.envelope.subject == "Original"
    assert fwd.envelope.from_ == (addr("Carol C.", "carol", "example.net"),)
    assert fwd.envelope.to == (addr(None, "dave", "example.net"),)
    assert fwd.envelope.message_id == "<orig@example.net>"
    (inner,) = fwd.parts
    assert (inner.type, inner.subtype, inner.start, inner.end) == (
        "MULTIPART",
        "MIXED",
        fwd.body_start,
        fwd.end,
    )
    inner_header = INNER_MESSAGE[: INNER_MESSAGE.index(b"--enc")]
    assert section(FORWARD, p, "2") == INNER_MESSAGE[:-2]
    assert section(FORWARD, p, "2.HEADER") == inner_header
    assert section(FORWARD, p, "2.TEXT") == INNER_MESSAGE[len(inner_header) : -2]
    assert section(FORWARD, p, "2.HEADER.FIELDS (SUBJECT)") == msg(b"Subject: Original", b"")
    assert section(FORWARD, p, "2.MIME") == msg(b"Content-Type: message/rfc822", b"")
    assert section(FORWARD, p, "2.1") == b"inner text"
    assert section(FORWARD, p, "2.2") == b"\x00\x01\x02"
    assert section(FORWARD, p, "2.1.MIME") == CRLF
    assert section(FORWARD, p, "1.HEADER") == b""
    assert section(FORWARD, p, "2.3") == b""


def test_message_rfc822_with_a_plain_body_has_part_1():
    inner = msg(b"Subject: hi", b"", b"just text")
    raw = msg(b"Content-Type: multipart/mixed; boundary=x", b"", b"--x", b"Content-Type: message/rfc822", b"")
    raw += inner + msg(b"--x--")
    p = mime.parse(raw)
    assert section(raw, p, "1.1") == b"just text"  # the encapsulated message's only part
    assert section(raw, p, "1.1.MIME") == msg(b"Subject: hi", b"")
    assert section(raw, p, "1.2") == b""
    assert p.body.parts[0].lines == 3


def test_multipart_digest_parts_default_to_message_rfc822():
    raw = msg(
        b"Content-Type: multipart/digest; boundary=d", b"", b"--d", b"", b"Subject: one", b"", b"first",
        b"--d", b"Content-Type: text/plain", b"", b"second", b"--d--",
    )  # fmt: skip
    one, two = mime.parse(raw).body.parts
    assert (one.type, one.subtype, one.envelope.subject) == ("MESSAGE", "RFC822", "one")
    assert (two.type, two.envelope) == ("TEXT", None)


def test_encoded_message_rfc822_stays_opaque():
    raw = msg(
        b"Content-Type: multipart/mixed; boundary=x", b"", b"--x", b"Content-Type: message/rfc822",
        b"Content-Transfer-Encoding: base64", b"", b"U3ViamVjdDogaGkNCg0KYm9keQ==", b"--x--",
    )  # fmt: skip
    part = mime.parse(raw).body.parts[0]
    assert (part.type, part.subtype, part.encoding) == ("MESSAGE", "RFC822", "BASE64")
    assert (part.envelope, part.parts, part.lines) == (None, (), None)


# ---------------------------------------------------------------------------------------------------
# Addresses (RFC 3501 address structures; RFC 2047 words stay encoded in the envelope)

ADDRESSES = [
    ("alice@example.org", (addr(None, "alice", "example.org"),)),
    ("Alice Example <alice@example.org>", (addr("Alice Example", "alice", "example.org"),)),
    (
        '"Smith, John" <john@example.com>, x@y.z',
        (addr("Smith, John", "john", "example.com"), addr(None, "x", "y.z")),
    ),
    (r'"A \"quoted\" \\ name" <a@b.c>', (addr('A "quoted" \\ name', "a", "b.c"),)),
    (
        "=?utf-8?q?J=C3=B6rg?= Meyer <jm@example.de>",
        (addr("=?utf-8?q?J=C3=B6rg?= Meyer", "jm", "example.de"),),
    ),
    ("John Q. Public <jqp@example.com>", (addr("John Q. Public", "jqp", "example.com"),)),
    ("root (Cron Daemon)", (addr("Cron Daemon", "root", ""),)),  # no domain: host "" (None means a group)
    ("jdoe@example.org (John Doe)", (addr("John Doe", "jdoe", "example.org"),)),
    ("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", (addr("Pete", "pete", "silly.test"),)),
    ("<@relay1,@relay2:user@host.test>", (addr(None, "user", "host.test", adl="@relay1,@relay2"),)),
    (
        '"john doe"@example.com, "john.doe"@example.com',
        (
            addr(None, '"john doe"', "example.com"),
            addr(None, "john.doe", "example.com"),
        ),
    ),  # fmt: skip
    ("user@[192.0.2.1]", (addr(None, "user", "[192.0.2.1]"),)),
    ("undisclosed-recipients:;", (Address(None, None, "undisclosed-recipients", None), GROUP_END)),
    (
        "A Group: Ed <ed@x.test>, fi@x.test; Outside <o@x.test>",
        (
            Address(None, None, "A Group", None),
            addr("Ed", "ed", "x.test"),
            addr(None, "fi", "x.test"),
            GROUP_END,
            addr("Outside", "o", "x.test"),
        ),
    ),  # fmt: skip
    ("Unclosed: a@b.c", (Address(None, None, "Unclosed", None), addr(None, "a", "b.c"), GROUP_END)),
    ("a@b.c,, ,d@e.f", (addr(None, "a", "b.c"), addr(None, "d", "e.f"))),
    ('"" <empty@name.test>', (addr(None, "empty", "name.test"),)),
    ("Broken <no-close@x.test", (addr("Broken", "no-close", "x.test"),)),
    ("", ()),
]


@pytest.mark.parametrize(("value", "expected"), ADDRESSES)
def test_parse_addresses(value, expected):
    assert mime.parse_addresses(value) == expected


def test_envelope_from_address_headers():
    raw = msg(
        b'From: "Sales, EU" <sales@example.eu>',
        b"Sender: =?iso-8859-1?q?B=E4r?= <bot@example.eu>",
        b"Reply-To:",
        b"To: Team: a@x.test,",
        b"  b@x.test;",
        b"Cc: undisclosed-recipients:;",
        b"Bcc: hidden@x.test",
        b"In-Reply-To: <prev@x.test>",
        b"",
    )
    e = mime.parse(raw).envelope
    assert e.from_ == (addr("Sales, EU", "sales", "example.eu"),)
    assert e.sender == (addr("=?iso-8859-1?q?B=E4r?=", "bot", "example.eu"),)
    assert e.reply_to == e.from_  # present but empty: RFC 3501 says use From
    assert e.to == (
        Address(None, None, "Team", None),
        addr(None, "a", "x.test"),
        addr(None, "b", "x.test"),
        GROUP_END,
    )
    assert e.cc == (Address(None, None, "undisclosed-recipients", None), GROUP_END)
    assert e.bcc == (addr(None, "hidden", "x.test"),)
    assert e.in_reply_to == "<prev@x.test>"
    assert (e.date, e.subject, e.message_id) == (None, None, None)


def test_headers_are_decoded_for_search_but_envelope_is_raw():
    raw = msg(
        b"Subject: =?utf-8?q?caf=C3=A9?= =?utf-8?b?4oKs?=  and =?x-unknown?q?raw?=",
        b"X-Split: =?utf-8?q?=E2=82?= =?utf-8?q?=AC?=",
        b"X-Latin1: caf\xe9",
        b"X-Utf8: caf\xc3\xa9",
        b"",
    )
    p = mime.parse(raw)
    assert p.envelope.subject == "=?utf-8?q?caf=C3=A9?= =?utf-8?b?4oKs?=  and =?x-unknown?q?raw?="
    assert dict(p.headers) == {
        "subject": "café€  and =?x-unknown?q?raw?=",
        "x-split": "€",  # a character split across two words survives
        "x-latin1": "café",  # not UTF-8: read as Latin-1
        "x-utf8": "café",
    }


DECODE_WORDS = [
    ("plain text", "plain text"),
    ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
    ("=?utf-8?q?a_b?= =?utf-8?q?c?=", "a bc"),  # whitespace between adjacent words goes
    ("=?utf-8?q?a?=\r\n =?iso-8859-1?q?=E9?=", "aé"),
    ("(=?utf-8?q?a?=) x", "(a) x"),
    ("=?utf-8*en?q?lang?=", "lang"),  # RFC 2231 language suffix
    ("=?utf-8?b?not base64!?=", "=?utf-8?b?not base64!?="),
    ("=?utf-8?b?YQ?=", "a"),  # missing padding tolerated
    ("=?rot13?q?x?=", "=?rot13?q?x?="),  # not a text encoding
    ("=?unicode_escape?q?=5Cud800?=", "\ufffd"),  # no lone surrogates: JSON could not store them
]


@pytest.mark.parametrize(("value", "expected"), DECODE_WORDS)
def test_decode_words(value, expected):
    assert mime.decode_words(value) == expected


# ---------------------------------------------------------------------------------------------------
# Missing and malformed input


def test_missing_headers_use_rfc_defaults():
    raw = msg(b"X-Only: this", b"", b"body")
    p = mime.parse(raw)
    assert p.envelope == mime.Envelope(None, None, (), (), (), (), (), (), None, None)
    b = p.body
    assert (b.type, b.subtype, b.params, b.encoding) == ("TEXT", "PLAIN", (("CHARSET", "us-ascii"),), "7BIT")
    assert (b.id, b.description, b.md5, b.disposition, b.language, b.location) == (None,) * 6


def test_unparsable_content_type_is_text_plain():
    p = mime.parse(msg(b"Content-Type: garbage", b"Content-Transfer-Encoding: ", b"", b"x"))
    assert (p.body.type, p.body.subtype, p.body.params, p.body.encoding) == (
        "TEXT", "PLAIN", (("CHARSET", "us-ascii"),), "7BIT",
    )  # fmt: skip


def test_no_closing_boundary_ends_at_end_of_message():
    raw = msg(b"Content-Type: multipart/mixed; boundary=b", b"", b"--b", b"", b"one", b"--b", b"", b"two")
    p = mime.parse(raw)
    one, two = p.body.parts
    assert section(raw, p, "1") == b"one"
    assert section(raw, p, "2") == b"two\r\n"  # no boundary follows, so its CRLF is the part's
    assert two.end == p.body.end == len(raw)


def test_boundary_never_appearing_gives_one_implicit_part():
    header = msg(b"Content-Type: multipart/mixed; boundary=missing", b"")
    raw = header + msg(b"just some text", b"--other")
    p = mime.parse(raw)
    (only,) = p.body.parts
    assert (only.type, only.subtype, only.params) == ("TEXT", "PLAIN", (("CHARSET", "us-ascii"),))
    assert (only.start, only.body_start, only.end) == (len(header), len(header), len(raw))
    assert section(raw, p, "1") == msg(b"just some text", b"--other")
    assert section(raw, p, "1.MIME") == b""


def test_multipart_without_boundary_parameter():
    raw = msg(b"Content-Type: multipart/mixed", b"", b"text")
    p = mime.parse(raw)
    assert p.body.type == "MULTIPART" and len(p.body.parts) == 1
    assert section(raw, p, "1") == msg(b"text")


def test_missing_inner_close_ends_at_the_outer_boundary():
    raw = msg(
        b"Content-Type: multipart/mixed; boundary=out", b"", b"--out",
        b"Content-Type: multipart/alternative; boundary=in", b"", b"--in", b"", b"inner", b"--out",
        b"", b"second", b"--out--",
    )  # fmt: skip
    p = mime.parse(raw)
    alt, second = p.body.parts
    assert len(alt.parts) == 1 and section(raw, p, "1.1") == b"inner"
    assert section(raw, p, "2") == b"second"


def test_longest_boundary_wins_when_one_is_a_prefix_of_another():
    raw = msg(
        b"Content-Type: multipart/mixed; boundary=abc", b"", b"--abc",
        b"Content-Type: multipart/alternative; boundary=abcdef", b"", b"--abcdef", b"", b"one", b"--abcdef",
        b"", b"two", b"--abcdef--", b"--abc", b"", b"three", b"--abc--",
    )  # fmt: skip
    p = mime.parse(raw)
    assert [len(c.parts) for c in p.body.parts] == [2, 0]
    assert [section(raw, p, s) for s in ("1.1", "1.2", "2")] == [b"one", b"two", b"three"]


def test_a_boundary_line_ends_a_header_even_if_it_looks_like_a_field():
    raw = msg(
        b'Content-Type: multipart/mixed; boundary="a:b"', b"", b"--a:b", b"X-Field: 1", b"--a:b", b"",
        b"second", b"--a:b--",
    )  # fmt: skip
    p = mime.parse(raw)
    assert [section(raw, p, s) for s in ("1.MIME", "1", "2")] == [b"X-Field: 1\r\n", b"", b"second"]


def test_longest_boundary_wins_even_when_it_is_the_outer_one():
    raw = msg(
        b"Content-Type: multipart/mixed; boundary=abcdef", b"", b"--abcdef",
        b"Content-Type: multipart/alternative; boundary=abc", b"", b"--abc", b"", b"one",
        b"--abcdef", b"", b"two", b"--abcdef--",
    )  # fmt: skip
    p = mime.parse(raw)
    assert [section(raw, p, s) for s in ("1.1", "2")] == [b"one", b"two"]


def test_no_blank_line_at_all_is_all_header():
    raw = b"From: a@b.c\r\nSubject: no body"
    p = mime.parse(raw)
    assert (p.body.body_start, p.body.end, p.body.size, p.body.lines) == (len(raw), len(raw), 0, 0)
    assert p.envelope.subject == "no body"
    assert section(raw, p, "HEADER") == raw
    assert section(raw, p, "TEXT") == b""
    assert section(raw, p, "HEADER.FIELDS (SUBJECT)") == b"Subject: no body"  # no blank line to add


def test_a_line_that_is_not_a_field_starts_the_body():
    raw = msg(b"Subject: oops", b"This line should have been the body", b"second")
    p = mime.parse(raw)
    assert p.body.body_start == len(b"Subject: oops\r\n")
    assert section(raw, p, "TEXT") == msg(b"This line should have been the body", b"second")
    assert p.headers == (("subject", "oops"),)


def test_bare_lf_line_endings():
    header = msg(b"Subject: lf", b"Content-Type: multipart/mixed; boundary=z", b"", eol=b"\n")
    raw = header + msg(b"--z", b"", b"one", b"two", b"--z", b"Content-Type: text/html", b"", b"<i>", b"--z--",
                       eol=b"\n")  # fmt: skip
    p = mime.parse(raw)
    one, html = p.body.parts
    assert p.body.body_start == len(header)
    assert section(raw, p, "1") == b"one\ntwo" and one.lines == 2
    assert section(raw, p, "2") == b"<i>" and html.subtype == "HTML"
    assert section(raw, p, "2.MIME") == b"Content-Type: text/html\n\n"
    assert section(raw, p, "HEADER.FIELDS (SUBJECT)") == b"Subject: lf\n\n"


def test_eight_bit_and_nul_bytes_in_header():
    raw = msg(b"From: J\xf6rg <j@x.test>", b"Subject: a\x00b \xff\xfe", b"X-\xe9: y", b"", b"body \x00\xff")
    p = mime.parse(raw)
    assert p.envelope.from_ == (addr("Jörg", "j", "x.test"),)
    assert p.envelope.subject == "a\x00b ÿþ"
    assert p.headers[2] == ("x-é", "y")
    assert section(raw, p, "TEXT") == msg(b"body \x00\xff")


def test_empty_message():
    p = mime.parse(b"")
    assert (p.body.start, p.body.body_start, p.body.end, p.body.size, p.body.lines) == (0, 0, 0, 0, 0)
    assert p.headers == ()
    assert section(b"", p, "") == b"" and section(b"", p, "1") == b""


def test_huge_number_of_parts_is_capped():
    n = mime.MAX_PARTS + 500
    raw = (
        msg(b"Content-Type: multipart/mixed; boundary=p", b"")
        + msg(b"--p", b"", b"x") * n
        + msg(b"--p--", b"e")
    )
    p = mime.parse(raw)
    parts = p.body.parts
    assert len(parts) == mime.MAX_PARTS - 1  # the top level counts too
    assert section(raw, p, str(len(parts))) == b"x"
    assert p.body.end == len(raw)  # the parts left out stay in the epilogue


def test_parts_over_the_cap_end_at_their_own_close_delimiter():
    inner = msg(b"Content-Type: multipart/mixed; boundary=in", b"") + msg(b"--in", b"", b"x") * mime.MAX_PARTS
    raw = msg(b"Content-Type: multipart/mixed; boundary=out", b"", b"--out") + inner
    raw += msg(b"--in--", b"--out", b"", b"after", b"--out--")
    p = mime.parse(raw)
    assert section(raw, p, "1").endswith(b"\r\n--in--")  # not swallowing the parent's boundary
    assert len(p.body.parts) == 1  # "after" is over the cap too: it stays in the parent's epilogue
    assert p.body.end == len(raw)


def test_deep_nesting_is_capped():
    depth = mime.MAX_DEPTH + 20
    raw = b"".join(
        msg(b"Content-Type: multipart/mixed; boundary=b%03d" % i, b"", b"--b%03d" % i) for i in range(depth)
    )
    raw += msg(b"", b"deep")
    p = mime.parse(raw)
    levels, node = 0, p.body
    while node.type == "MULTIPART":
        node, levels = node.parts[0], levels + 1
    assert levels == mime.MAX_DEPTH + 1  # the last multipart keeps its body as one implicit part
    assert section(raw, p, ".".join(["1"] * levels)).endswith(b"deep\r\n")


# ---------------------------------------------------------------------------------------------------
# section() syntax and header_fields() (mailbox-store)


@pytest.mark.parametrize(
    "spec",
    ["0", "01", "1.", ".1", "1..2", "MIME", "FOO", "1.FOO", "HEADER.FIELDS", "HEADER.FIELDS ()",
     "HEADER.FIELDS (A", "HEADER.FIELDS( A)", "HEADER.FIELDS ( A)", "1.2.MIME.TEXT", "TEXT.1"],
)  # fmt: skip
def test_bad_section_spec_raises(spec):
    with pytest.raises(ValueError):
        section(PLAIN, mime.parse(PLAIN), spec)


def test_section_accepts_quoted_field_names_and_huge_part_numbers():
    p = mime.parse(PLAIN)
    assert section(PLAIN, p, 'HEADER.FIELDS ("Subject" TO)') == msg(
        b"To: Bob <bob@example.com>", b"Subject: Lunch", b""
    )
    assert section(PLAIN, p, "1" * 40) == b""


def test_header_fields():
    header = msg(b"Subject: one", b"To: a@b.c,", b"  d@e.f", b"subject: two", b"")
    assert header_fields(header, {"SUBJECT"}, False) == msg(b"Subject: one", b"subject: two", b"")
    assert header_fields(header, {"subject"}, True) == msg(b"To: a@b.c,", b"  d@e.f", b"")
    assert header_fields(header, set(), True) == header
    assert header_fields(b"", {"TO"}, False) == b""


# ---------------------------------------------------------------------------------------------------
# JSON as the store keeps it

TABLE = [PLAIN, ALT, MIXED, NESTED, FORWARD, b"", b"\r\n", b"no header at all"]


@pytest.mark.parametrize("raw", TABLE)
def test_json_round_trip(raw):
    p = mime.parse(raw)
    assert mime.from_json(mime.to_json(p)) == p


def test_json_is_compact_for_a_plain_message():
    data = mime.to_json(mime.parse(PLAIN))
    assert len(data) < 700, data


def test_json_rejects_an_unknown_version():
    with pytest.raises(ValueError):
        mime.from_json(b"[2,[],[],[]]")


# ---------------------------------------------------------------------------------------------------
# Properties

FRAGMENTS = [
    b"--b\r\n", b"--b--\r\n", b"--c\r\n", b"--c--\r\n", b"--b", b"\r\n", b"\n", b"\r", b" folded\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: multipart/alternative; boundary=c\r\n",
    b"Content-Type: multipart/digest; boundary=\"c\"\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset*0*=utf-8''%E2; charset*1=x\r\n", b"Content-Type: multipart/x\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Disposition: attachment; filename=\"a;b\"\r\n",
    b"From: \"a\" <b@c>, (x) d:e@f;\r\n", b"To: =?utf-8?q?x?= <@a,@b:c@d>\r\n", b"Subject: =?utf-8?b?4oKs?=\r\n",
    b"text line\r\n", b"\x00\xff\xfe", b"x: y\n", b"=?", b"(", b"\"", b"<", b":", b";",
    b"Cc: ", b"Subject: =?unicode_escape?q?=5Cud800?= =?utf-7?q?+2D3-?=\r\n",
]  # fmt: skip
messages = st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=40).map(b"".join),
)


def part_paths(part: BodyPart, prefix: str, message_body: bool):
    """(section number, part) for every numbered part, as RFC 3501 §6.4.5 numbers them."""
    if part.type == "MULTIPART":
        for i, child in enumerate(part.parts, 1):
            yield from part_paths_of(child, f"{prefix}{i}")
    elif message_body:
        yield from part_paths_of(part, f"{prefix}1")


def part_paths_of(part: BodyPart, number: str):
    yield number, part
    if part.type == "MULTIPART":
        yield from part_paths(part, number + ".", False)
    elif part.envelope is not None:
        yield from part_paths(part.parts[0], number + ".", True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_property_parse_never_raises_and_offsets_nest(raw):
    p = mime._parse(raw)  # the strict walk: parse() would hide a bug behind its fallback
    assert p.body.start == 0 and p.body.end == len(raw)
    for part in walk(p.body):
        assert 0 <= part.start <= part.body_start <= part.end <= len(raw)
        assert part.size == part.end - part.body_start
        kids = part.parts
        for child in kids:
            assert part.body_start <= child.start and child.end <= part.end
        for a, b in zip(kids, kids[1:], strict=False):
            assert a.end <= b.start
    assert mime.from_json(mime.to_json(p)) == p
    assert section(raw, p, "HEADER") + section(raw, p, "TEXT") == raw
    for number, part in part_paths(p.body, "", True):
        assert section(raw, p, number) == raw[part.body_start : part.end]
        assert section(raw, p, number + ".MIME") == raw[part.start : part.body_start]


@given(st.binary(max_size=300))
def test_property_public_parse_never_raises(raw):
    assert mime.parse(raw).body.end == len(raw)


atoms = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_+=?!", min_size=1, max_size=8)
names = st.lists(atoms, min_size=1, max_size=3).map(" ".join)
quoted = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
simple_address = st.one_of(
    st.builds(lambda local, host: f"{local}@{host}", atoms, atoms),
    st.builds(lambda name, local, host: f"{name} <{local}@{host}>", st.one_of(names, quoted), atoms, atoms),
)


@given(st.lists(simple_address, min_size=1, max_size=4), st.sampled_from([",", ", ", " ,\t"]))
def test_property_fast_address_path_agrees_with_the_tokenizer(items, sep):
    value = sep.join(items)
    fast = mime._simple_addresses(value, mime._Budget())
    assert fast is not None
    assert fast == mime._parse_addresses(value, mime._Budget())
