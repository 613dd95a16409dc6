"""The Received: header (RFC 5321 §4.4, RFC 3848 WITH values) and Message-ID/Date on submission."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailflow_smtp_ingress import headers

T = 1764237600.0  # Thu, 27 Nov 2025 10:00:00 +0000


def test_date_is_rfc5322_utc():
    assert headers.rfc5322_date(T) == "Thu, 27 Nov 2025 10:00:00 +0000"


@pytest.mark.parametrize(
    "esmtp,tls,auth,utf8,name",
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_protocol_names(esmtp, tls, auth, utf8, name):
    assert headers.protocol_name(esmtp, tls, auth, utf8) == name


def test_received_plain_and_with_tls():
    plain = headers.received(
        helo="c.example.test",
        ip="192.0.2.1",
        hostname="mx.test",
        protocol="ESMTP",
        queue_id="Q1",
        tls=None,
        rcpt=None,
        when=T,
    )
    assert plain == (
        b"Received: from c.example.test ([192.0.2.1])\r\n"
        b"\tby mx.test (Mailflow) with ESMTP id Q1; Thu, 27 Nov 2025 10:00:00 +0000\r\n"
    )
    full = headers.received(
        helo="c.example.test",
        ip="2001:db8::1",
        hostname="mx.test",
        protocol="ESMTPS",
        queue_id="Q2",
        tls="TLSv1.3 TLS_AES_256_GCM_SHA384",
        rcpt="bob@example.test",
        when=T,
    )
    assert full == (
        b"Received: from c.example.test ([IPv6:2001:db8::1])\r\n"
        b"\tby mx.test (Mailflow) with ESMTPS id Q2\r\n"
        b"\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384)\r\n"
        b"\tfor <bob@example.test>; Thu, 27 Nov 2025 10:00:00 +0000\r\n"
    )
    parsed = email.message_from_bytes(full + b"\r\nbody\r\n", policy=email.policy.default)
    assert "Q2" in parsed["Received"]


def test_missing_message_id_and_date_are_added():
    out = headers.add_missing_id_and_date(b"Subject: x\r\n\r\nbody\r\n", "<id@h>", "DATE")
    assert out == b"Subject: x\r\nMessage-ID: <id@h>\r\nDate: DATE\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "msg,expected",
    [
        (b"Message-ID: <a@b>\r\nDate: D\r\n\r\nx\r\n", b"Message-ID: <a@b>\r\nDate: D\r\n\r\nx\r\n"),
        (b"message-id:<a@b>\r\n\r\nx\r\n", b"message-id:<a@b>\r\nDate: DATE\r\n\r\nx\r\n"),
        (b"\r\nno headers\r\n", b"Message-ID: <id@h>\r\nDate: DATE\r\n\r\nno headers\r\n"),
        (b"Subject: only headers", b"Subject: only headers\r\nMessage-ID: <id@h>\r\nDate: DATE\r\n"),
        (
            b"Subject: x\r\n\r\nDate: in the body\r\n",
            b"Subject: x\r\nMessage-ID: <id@h>\r\nDate: DATE\r\n\r\nDate: in the body\r\n",
        ),
    ],
)
def test_headers_only_where_missing(msg, expected):
    assert headers.add_missing_id_and_date(msg, "<id@h>", "DATE") == expected


@pytest.mark.parametrize(
    "message,left",
    [
        (b"X-Spam: No\r\nSubject: s\r\n\r\nbody\r\n", b"Subject: s\r\n\r\nbody\r\n"),
        (b"Subject: s\r\nx-spam : yes\r\n\tfolded on\r\n more\r\nTo: a\r\n\r\n", b"Subject: s\r\nTo: a\r\n\r\n"),
        (b"Subject: s\r\n\r\nX-Spam: in the body stays\r\n", b"Subject: s\r\n\r\nX-Spam: in the body stays\r\n"),
        (b"\r\nX-Spam: no header block at all\r\n", b"\r\nX-Spam: no header block at all\r\n"),
        (b"X-Spammer: not the same field\r\n\r\n", b"X-Spammer: not the same field\r\n\r\n"),
        (b"X-Spam: only headers, no body", b""),
    ],
)
def test_remove_fields_drops_every_instance_with_its_folded_lines(message, left):
    assert headers.remove_fields(message, ("X-Spam",)) == left


def test_message_id_is_read_from_the_header_block_only():
    from mailflow_smtp_ingress.headers import MAX_MESSAGE_ID, message_id

    assert message_id(b"From: a@b.test\r\nMessage-ID: <x.1@b.test>\r\nSubject: s\r\n\r\nbody\r\n") == "<x.1@b.test>"
    assert message_id(b"message-id:\r\n <folded@b.test>\r\nTo: c\r\n\r\n") == "<folded@b.test>"
    assert message_id(b"Subject: s\r\n\r\nMessage-ID: <in-body@b.test>\r\n") == ""
    assert message_id(b"\r\nMessage-ID: <x>\r\n") == ""  # no header at all
    assert message_id(b"Message-ID: <no-end@b.test>") == "<no-end@b.test>"
    assert message_id(b"Message-ID: <\xff@b.test>\r\n\r\n") == "<\ufffd@b.test>"
    assert len(message_id(b"Message-ID: <" + b"x" * 5000 + b">\r\n\r\n")) == MAX_MESSAGE_ID
