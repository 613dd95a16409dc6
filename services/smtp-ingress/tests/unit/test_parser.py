"""Paths, addresses, ESMTP parameters, xtext and message-text checks (RFC 5321 §4.1.2, RFC 3461, RFC 6531)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.errors import PermFailure
from mailflow_smtp_ingress import parser
from mailflow_smtp_ingress import replies as R

PATHS = [
    ("<a@b.test>", ("a@b.test", "")),
    ("<a@b.test> SIZE=10 BODY=8BITMIME", ("a@b.test", "SIZE=10 BODY=8BITMIME")),
    ("<>", ("", "")),
    ("<> RET=HDRS", ("", "RET=HDRS")),
    ("a@b.test SIZE=1", ("a@b.test", "SIZE=1")),  # bare, lenient
    (' <"x > y"@b.test>', ('"x > y"@b.test', "")),
    ('<"a\\">"@b.test>', ('"a\\">"@b.test', "")),
]


@pytest.mark.parametrize("arg,expected", PATHS)
def test_split_path(arg, expected):
    assert parser.split_path(arg) == expected


@pytest.mark.parametrize("arg", ["<a@b.test", "<a@b.test>x", "a<b@c.test>", '<"unterminated@b.test>'])
def test_split_path_errors(arg):
    with pytest.raises(PermFailure) as e:
        parser.split_path(arg)
    assert e.value.reply.code == 501


ADDRESSES = [
    ("alice@example.test", "alice@example.test", ""),
    ("Alice@EXAMPLE.Test", "Alice@example.test", ""),  # the local part keeps its case
    ("alice@example.test.", "alice@example.test", ""),
    ("first.last+tag@example.test", "first.last+tag@example.test", ""),
    ('"alice"@example.test', "alice@example.test", ""),  # needless quotes go
    ('"john doe"@example.test', '"john doe"@example.test', ""),
    ('"a\\"b"@example.test', '"a\\"b"@example.test', ""),
    ("@relay.test:bob@example.test", "bob@example.test", "@relay.test"),
    ("@r1.test,@r2.test:bob@example.test", "bob@example.test", "@r1.test,@r2.test"),
    ("bob@[127.0.0.1]", "bob@[127.0.0.1]", ""),
    ("bob@[IPv6:2001:DB8::1]", "bob@[IPv6:2001:db8::1]", ""),
    ("x%y@example.test", "x%y@example.test", ""),  # syntactically fine; policy refuses it
]


@pytest.mark.parametrize("path,address,route", ADDRESSES)
def test_parse_address(path, address, route):
    a = parser.parse_address(path)
    assert a.address == address and a.route == route


BAD = [
    ("", 501),
    ("alice", 501),
    ("alice@", 501),
    ("@example.test", 501),
    (".alice@example.test", 501),
    ("al..ice@example.test", 501),
    ("alice@exa_mple.test", 501),
    ("alice@-example.test", 501),
    ("alice@example..test", 501),
    ("a@b@example.test", 501),
    ("alice@[300.1.1.1]", 501),
    ("alice@[IPv6:zz::1]", 501),
    ("@relay.test;bob@example.test", 501),
    ("@relay.test", 501),
    ("a b@example.test", 501),
    ("x" * 65 + "@example.test", 501),
    ("alice@" + "a" * 64 + ".test", 501),  # a label longer than 63
    ("alice@" + ("a" * 60 + ".") * 5 + "test", 501),  # a path longer than 256
    ("jörg@example.test", 553),  # UTF-8 without SMTPUTF8
    ("a\x01b@example.test", 501),
]


@pytest.mark.parametrize("path,code", BAD)
def test_parse_address_errors(path, code):
    with pytest.raises(PermFailure) as e:
        parser.parse_address(path)
    assert e.value.reply.code == code


def test_utf8_addresses_with_smtputf8():
    a = parser.parse_address("jörg@bücher.test", utf8=True)
    assert a.address == "jörg@bücher.test"


def test_postmaster_without_domain_only_where_allowed():
    assert parser.parse_address("Postmaster", allow_postmaster=True).domain == ""
    with pytest.raises(PermFailure):
        parser.parse_address("postmaster")


def test_mail_parameters():
    p = parser.mail_params(
        parser.parse_params("size=100 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=A+2BB+3D AUTH=<>"), max_size=1000
    )
    assert p == parser.MailParams(
        size=100, body_8bit=True, smtputf8=True, ret="HDRS", envid="A+B=", auth="<>"
    )


@pytest.mark.parametrize(
    "params,code",
    [
        ("SIZE=1001", 552),
        ("SIZE=x", 501),
        ("SIZE", 501),
        ("BODY=BINARYMIME", 501),
        ("SMTPUTF8=yes", 501),
        ("RET=ALL", 501),
        ("ENVID=" + "x" * 101, 501),
        ("ENVID=a+zz", 501),
        ("FOO=1", 555),
        ("SIZE=1 size=2", 501),
        ("=x", 501),
    ],
)
def test_mail_parameter_errors(params, code):
    with pytest.raises(PermFailure) as e:
        parser.mail_params(parser.parse_params(params), max_size=1000)
    assert e.value.reply.code == code


def test_rcpt_parameters():
    p = parser.rcpt_params(parser.parse_params("NOTIFY=success,delay ORCPT=rfc822;bob+2Bx@example.test"))
    assert p.notify == ("SUCCESS", "DELAY") and p.orcpt == "rfc822;bob+x@example.test"
    assert parser.rcpt_params(parser.parse_params("NOTIFY=NEVER")).notify == ("NEVER",)
    assert (
        parser.rcpt_params(parser.parse_params("ORCPT=utf-8;jörg@example.test")).orcpt
        == "utf-8;jörg@example.test"
    )


@pytest.mark.parametrize(
    "params",
    ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=SUCCESS,SUCCESS", "ORCPT=bob", "ORCPT=;x", "NOTIFY"],
)
def test_rcpt_parameter_errors(params):
    with pytest.raises(PermFailure):
        parser.rcpt_params(parser.parse_params(params))


@given(st.binary(max_size=60))
def test_xtext_round_trip(raw):
    encoded = "".join(chr(b) if 33 <= b <= 126 and b not in (43, 61) else f"+{b:02X}" for b in raw)
    assert parser.xtext_decode(encoded) == raw.decode("utf-8", "replace")


TEXT = [
    (b"Subject: x\r\n\r\nfine\r\n", None),
    (b"", None),
    (b"a\x00b\r\n", R.R550_NUL_DATA),
    (b"bare\nlf\r\n", R.R550_BARE_LF_DATA),
    (b"bare\rcr\r\n", R.R550_BARE_LF_DATA),
    (b"ends with lf\n", R.R550_BARE_LF_DATA),
    (b"x" * 998 + b"\r\n", None),
    (b"x" * 999 + b"\r\n", R.R500_TEXT_LINE_TOO_LONG),
    (b"short\r\n" + b"x" * 999, R.R500_TEXT_LINE_TOO_LONG),
]


@pytest.mark.parametrize("data,problem", TEXT)
def test_check_text(data, problem):
    assert parser.check_text(data, 1000) == problem


@pytest.mark.parametrize(
    "stuffed,plain",
    [
        (b"..a\r\n", b".a\r\n"),
        (b"x\r\n..\r\n.y\r\n", b"x\r\n.\r\ny\r\n"),
        (b"no dots\r\n", b"no dots\r\n"),
        (b"", b""),
    ],
)
def test_unstuff(stuffed, plain):
    assert parser.unstuff(stuffed) == plain


@pytest.mark.parametrize(
    "helo,clean",
    [
        ("mail.example.test", "mail.example.test"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("evil)(\r\nX", "evilX"),
        ("()", "unknown"),
    ],
)
def test_sanitize_helo(helo, clean):
    assert parser.sanitize_helo(helo) == clean
