"""Sender authentication on the MX listener (checks.py): SPF, DKIM, ARC and DMARC against a DNS server
the test starts, messages signed in the test with dkimpy (an independent signer), and what the client
hears at the end of DATA."""

from __future__ import annotations

import dkim as dkimpy
import pytest

from mailflow.cli.dns import txt
from tests.support.dkim import rsa_key
from tests.support.dns import DnsServer

KEY = rsa_key()


ZONE = f"""
daum.test.                    300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
mail.daum.test.               300 IN TXT "v=spf1 ip4:127.0.0.1 -all"
mf1._domainkey.daum.test.     300 IN TXT {txt(KEY.txt)}
_dmarc.daum.test.             300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@daum.test"
quarantine.test.              300 IN TXT "v=spf1 -all"
_dmarc.quarantine.test.       300 IN TXT "v=DMARC1; p=quarantine"
relaxed.test.                 300 IN TXT "v=spf1 -all"
_dmarc.relaxed.test.          300 IN TXT "v=DMARC1; p=none"
"""


@pytest.fixture
def dns():
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def mx(make_server, dns):
    return make_server(dns=dns)


def message(sender: str = "Boss <boss@daum.test>", extra: bytes = b"", sign: bool = False) -> bytes:
    msg = (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: quarterly numbers\r\n"
        "Date: Mon, 07 Dec 2026 05:00:00 +0000\r\nMessage-ID: <q4@daum.test>\r\n"
    ).encode() + extra + b"\r\nPlease see the figures.\r\n"
    if sign:
        msg = dkimpy.sign(msg, b"mf1", b"daum.test", KEY.dkimpy, include_headers=[b"from", b"to", b"subject", b"date"]) + msg
    return msg


def send(raw, server, mail_from: str, msg: bytes, helo: str = "mail.daum.test") -> str:
    """One transaction on the MX listener; the reply to the end of DATA."""
    c = raw(server=server)
    c.cmd(f"EHLO {helo}", "250")
    c.cmd(f"MAIL FROM:<{mail_from}>", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354")
    c.send_raw(msg + b".\r\n")
    return c.reply()


def header_of(raw_message: bytes) -> list[str]:
    """The queued message's Authentication-Results field, one line per result."""
    head = raw_message.split(b"\r\n\r\n", 1)[0].decode()
    start = head.index("Authentication-Results: mx.example.test;")
    lines = head[start:].split("\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def test_signed_mail_from_an_authorised_host_passes_everything(raw, mx):
    reply = send(raw, mx, "boss@daum.test", message(sign=True))
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    (queued, data) = mx.messages[0]
    assert not queued.junk
    assert data.startswith(b"Received: from mail.daum.test")  # our trace line, then our results
    assert data.split(b"\r\n")[3].startswith(b"Authentication-Results: mx.example.test;")
    lines = header_of(data)
    assert lines[1:] == [
        "spf=pass smtp.helo=mail.daum.test;",
        "spf=pass smtp.mailfrom=daum.test;",
        lines[3],
        "arc=none;",
        'dmarc=pass (p=reject dis=none) reason="SPF aligned (daum.test)" header.from=daum.test',
    ]
    assert lines[3].startswith("dkim=pass header.d=daum.test header.s=mf1 header.a=rsa-sha256 header.b=")


def test_forged_from_of_a_reject_domain_is_refused_at_the_end_of_data(raw, mx):
    reply = send(raw, mx, "bulk@elsewhere.test", message(), helo="spammer.elsewhere.test")
    assert reply == "550 5.7.1 Rejected by the DMARC policy of the From domain (daum.test)"
    assert mx.messages == []


def test_dkim_alone_passes_dmarc_when_spf_does_not(raw, mx):
    # a forwarder's MAIL FROM: SPF says nothing for daum.test, the signature still aligns
    reply = send(raw, mx, "fwd@elsewhere.test", message(sign=True), helo="fwd.elsewhere.test")
    assert reply.startswith("250 2.0.0")
    assert header_of(mx.messages[0][1])[-1].startswith("dmarc=pass (p=reject dis=none) reason=\"DKIM aligned")


def test_forged_from_of_a_quarantine_domain_goes_to_junk(raw, mx):
    reply = send(raw, mx, "ceo@quarantine.test", message("ceo@quarantine.test"), helo="x.elsewhere.test")
    assert reply.startswith("250 2.0.0")
    queued, data = mx.messages[0]
    assert queued.junk
    lines = header_of(data)
    assert "spf=fail" in lines[2] and lines[-1].startswith("dmarc=fail (p=quarantine dis=quarantine)")


def test_p_none_is_delivered_as_is(raw, mx):
    assert send(raw, mx, "a@relaxed.test", message("a@relaxed.test")).startswith("250 2.0.0")
    assert not mx.messages[0][0].junk


def test_dns_that_does_not_answer_is_451_never_550(raw, mx, dns):
    dns.drop.add("_dmarc.daum.test")
    reply = send(raw, mx, "bulk@elsewhere.test", message(), helo="spammer.elsewhere.test")
    assert reply == "451 4.7.1 Cannot check the DMARC policy of the From domain now, try again later"
    assert mx.messages == []


def test_spf_enforced_refuses_a_fail_and_defers_a_dns_failure(raw, make_server, dns):
    server = make_server(dns=dns, check_spf="enforce")
    reply = send(raw, server, "a@quarantine.test", message("a@relaxed.test"))
    assert reply == "550 5.7.23 SPF validation failed for MAIL FROM domain quarantine.test"
    dns.servfail.add("daum.test")
    reply = send(raw, server, "boss@daum.test", message(sign=True))
    assert reply == "451 4.7.24 SPF validation error (DNS), try again later"
    assert server.messages == []


def test_forged_authentication_results_in_our_name_are_removed(raw, mx):
    forged = (
        b"Authentication-Results: MX.EXAMPLE.TEST;\r\n\tspf=pass smtp.mailfrom=daum.test;\r\n\tdmarc=pass\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
    )
    assert send(raw, mx, "a@relaxed.test", message("a@relaxed.test", extra=forged)).startswith("250")
    data = mx.messages[0][1]
    assert data.count(b"Authentication-Results:") == 2
    assert b"MX.EXAMPLE.TEST" not in data and b"Authentication-Results: other.example; dkim=pass\r\n" in data


def test_authenticated_submission_is_not_checked(make_server, dns, client_tls):
    import smtplib

    server = make_server(dns=dns)
    with smtplib.SMTP("127.0.0.1", server.port("submission")) as s:
        s.starttls(context=client_tls)
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["bob@example.test"], message("Alice <alice@example.test>"))
    assert b"Authentication-Results" not in server.messages[0][1]


def test_every_check_off_adds_nothing(raw, make_server, dns):
    server = make_server(dns=dns, check_spf="off", check_dkim="off", check_arc="off", check_dmarc="off")
    assert send(raw, server, "bulk@elsewhere.test", message()).startswith("250")
    assert b"Authentication-Results" not in server.messages[0][1]
    assert dns.queries == []


def test_a_signature_broken_on_the_way_is_reported_or_refused_when_dkim_is_enforced(raw, make_server, dns):
    tampered = message(sign=True).replace(b"Please see the figures.", b"Please wire the money.")
    server = make_server(dns=dns)
    assert send(raw, server, "boss@daum.test", tampered).startswith("250")  # SPF still aligns: DMARC passes
    lines = header_of(server.messages[0][1])
    assert lines[3].startswith('dkim=fail reason="body hash') and lines[-1].startswith("dmarc=pass")
    enforcing = make_server(dns=dns, check_dkim="enforce")
    assert send(raw, enforcing, "boss@daum.test", tampered) == "550 5.7.20 No passing DKIM signature found"
    assert send(raw, enforcing, "boss@daum.test", message()).startswith("250")  # unsigned is not refused


def test_an_arc_chain_sealed_by_an_intermediary_is_verified(raw, mx):
    msg = b"Authentication-Results: relay.daum.test; dkim=pass header.d=daum.test\r\n" + message(sign=True)
    sealed = b"".join(dkimpy.arc_sign(msg, b"mf1", b"daum.test", KEY.dkimpy, b"relay.daum.test")) + msg
    assert send(raw, mx, "boss@daum.test", sealed).startswith("250")
    assert "arc=pass (i=1);" in header_of(mx.messages[0][1])
