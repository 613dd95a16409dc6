"""Sender authentication through the whole stack (six processes, nats-server, a DNS server the test
starts): mail forged in the name of a p=quarantine domain reaches the recipient's Junk folder over
IMAP, with our Authentication-Results saying why; a p=reject domain's forgery is refused at DATA."""

from __future__ import annotations

import imaplib
import smtplib

import pytest

from mailflow.stack import Ports, Stack
from tests.support import wait_for
from tests.support.dns import DnsServer

ZONE = """
quarantine.test.         300 IN TXT "v=spf1 -all"
_dmarc.quarantine.test.  300 IN TXT "v=DMARC1; p=quarantine"
reject.test.             300 IN TXT "v=spf1 -all"
_dmarc.reject.test.      300 IN TXT "v=DMARC1; p=reject"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with DnsServer(ZONE) as dns:
        env = {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address, "MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.2"}
        st = Stack(tmp_path_factory.mktemp("stack"), Ports.free(), env=env).start()
        try:
            st.cli("domain", "add", "example.test")
            st.cli("user", "add", "alice@example.test", "--password", "alice-pw")
            yield st
        finally:
            st.stop()


def forged(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: invoice\r\n"
        "Message-ID: <forged@elsewhere.test>\r\n\r\nPay now.\r\n"
    ).encode()


def mailbox(st: Stack, name: str) -> list[bytes]:
    with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30) as m:
        m.login("alice@example.test", "alice-pw")
        m.select(name, readonly=True)
        _, data = m.uid("SEARCH", None, "ALL")
        out = []
        for uid in data[0].split():
            _, got = m.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            out.append(got[0][1])
        return out


def test_a_quarantine_domains_forgery_lands_in_junk_and_a_reject_domains_is_refused(stack):
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("bulk.elsewhere.test")
        s.sendmail("billing@quarantine.test", ["alice@example.test"], forged("billing@quarantine.test"))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("x@elsewhere.test", ["alice@example.test"], forged("Boss <boss@reject.test>"))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        550,
        b"5.7.1 Rejected by the DMARC policy of the From domain (reject.test)",
    )
    (junk,) = wait_for(lambda: mailbox(stack, "Junk"), timeout=20, what="the forgery in Junk")
    assert b"\tdmarc=fail (p=quarantine dis=quarantine)" in junk
    assert b"spf=fail" in junk and b"header.from=quarantine.test" in junk
    assert mailbox(stack, "INBOX") == []
