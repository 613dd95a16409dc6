"""Authentication-Results (mailflow.authn.results): our header, and forged ones taken out first."""

from __future__ import annotations

import pytest

from mailflow.authn import Arc, Dkim, Dmarc, Spf, results


def test_the_header_names_every_check_one_a_line():
    h = results.header(
        "mx.naver.test",
        [Spf("pass", "mailfrom", "daum.test"), Spf("none", "helo", "mail.daum.test")],
        [Dkim("pass", "daum.test", "mf1", "rsa-sha256", "AbC+/de1"), Dkim("fail", "x.test", "s", reason="body hash did not verify")],
        Arc("none"),
        Dmarc("pass", "daum.test", "none", "reject", "DKIM aligned (daum.test)"),
    )
    assert h.decode().split("\r\n") == [
        "Authentication-Results: mx.naver.test;",
        "\tspf=pass smtp.mailfrom=daum.test;",
        "\tspf=none smtp.helo=mail.daum.test;",
        '\tdkim=pass header.d=daum.test header.s=mf1 header.a=rsa-sha256 header.b="AbC+/de1";',
        '\tdkim=fail reason="body hash did not verify" header.d=x.test header.s=s;',
        "\tarc=none;",
        '\tdmarc=pass (p=reject dis=none) reason="DKIM aligned (daum.test)" header.from=daum.test',
        "",
    ]


def test_checks_that_did_not_run_are_left_out():
    assert results.header("mx.test") == b"Authentication-Results: mx.test;\r\n\tnone\r\n"
    assert results.header("mx.test", dkims=[]) == b"Authentication-Results: mx.test;\r\n\tdkim=none\r\n"
    h = results.header("mx.test", dmarc=Dmarc("fail", "d.test", "quarantine", "reject", ""))
    assert h.endswith(b"\tdmarc=fail (p=reject dis=quarantine) header.from=d.test\r\n")


@pytest.mark.parametrize(
    "text, written",
    [
        ("example.org", "example.org"),
        ("[192.0.2.1]", '"[192.0.2.1]"'),  # an address literal HELO: not a token
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("bad\r\nX-Injected: yes", '"bad??X-Injected: yes"'),
        ("b\u00fccher.test", '"b?cher.test"'),
        ("", '""'),
    ],
)
def test_values_are_tokens_or_quoted_strings(text, written):
    assert results.value(text) == written


def test_a_reason_can_never_end_the_header():
    h = results.header("mx.test", [Spf("fail", "mailfrom", "x.test", reason='a\r\nb"' + "x" * 500)])
    assert h.count(b"\r\n") == 2 and len(h) < 300


# --- removal ----------------------------------------------------------------------------------------

MESSAGE = (
    b"Received: from a by b; Mon, 7 Dec 2026 05:00:00 +0000\r\n"
    b"Authentication-Results: MX.Naver.Test; spf=pass smtp.mailfrom=daum.test\r\n"
    b"Authentication-Results: other.test; dkim=pass\r\n"
    b"authentication-results :\r\n"
    b"  (a comment (nested \\) still)) mx.naver.test 1;\r\n"
    b"\tdmarc=pass header.from=daum.test\r\n"
    b'Authentication-Results: "mx.naver.test"; arc=pass\r\n'
    b"Authentication-Results-Original: mx.naver.test; spf=pass\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx.naver.test; in the body it stays\r\n"
)


def test_forged_headers_with_our_authserv_id_are_removed_whole():
    out = results.remove_ours(MESSAGE, "mx.naver.test")
    assert out == (
        b"Received: from a by b; Mon, 7 Dec 2026 05:00:00 +0000\r\n"
        b"Authentication-Results: other.test; dkim=pass\r\n"
        b"Authentication-Results-Original: mx.naver.test; spf=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.naver.test; in the body it stays\r\n"
    )


def test_first_field_and_a_message_that_is_all_header():
    msg = b"Authentication-Results: mx.test; spf=pass\r\n\tdkim=pass\r\nSubject: x\r\n"
    assert results.remove_ours(msg, "mx.test") == b"Subject: x\r\n"
    assert results.remove_ours(msg, "mx.other") is msg


def test_a_message_without_the_header_is_not_copied():
    msg = b"Subject: x\r\n\r\nbody\r\n"
    assert results.remove_ours(msg, "mx.test") is msg


@pytest.mark.parametrize(
    "value, authserv_id",
    [
        (b" mx.test; spf=pass", b"mx.test"),
        (b" MX.TEST 1 ; none", b"mx.test"),
        (b"\r\n\t(c) mx.test;", b"mx.test"),
        (b' "mx\\.test";', b"mx.test"),
        (b" (unclosed comment mx.test;", None),
        (b"   ", None),
        (b" ;spf=pass", None),
    ],
)
def test_authserv_id(value, authserv_id):
    assert results.authserv_id(value) == authserv_id


def test_many_forged_fields_cost_one_pass():
    forged = b"Authentication-Results: mx.test;\r\n" + b"\t x\r\n" * 10
    msg = forged * 5000 + b"Subject: kept\r\n\r\nbody\r\n"
    assert results.remove_ours(msg, "mx.test") == b"Subject: kept\r\n\r\nbody\r\n"
