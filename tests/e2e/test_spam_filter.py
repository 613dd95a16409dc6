"""Spam filtering end to end: the six services as processes with a real rspamd (tests/support/rspamd.py).
SMTP in: GTUBE is refused at the end of DATA, a message rspamd marks lands in the user's Junk folder with
X-Spam: Yes, a clean one in INBOX; IMAP out: the user moves the clean one into Junk and rspamd learns it."""

from __future__ import annotations

import imaplib
import smtplib
import uuid

import pytest

from mailflow.stack import Stack
from tests.support import wait_for
from tests.support.stacks import example_test

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, rspamd):
    env = {
        "MAILFLOW_SMTP_RSPAMD_URL": rspamd.url,
        "MAILFLOW_STORE_RSPAMD_URL": rspamd.controller_url,
        "MAILFLOW_STORE_RSPAMD_PASSWORD": rspamd.password,
    }
    with example_test(tmp_path_factory.mktemp("stack"), env, users=("alice",)) as st:
        yield st


def message(subject: str, body: str) -> bytes:
    return (
        f"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\nDate: Mon, 07 Dec 2026 05:00:00 +0000\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def send(stack: Stack, raw: bytes) -> None:
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.sendmail("carol@elsewhere.test", ["alice@example.test"], raw)


def imap(stack: Stack) -> imaplib.IMAP4:
    m = imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30)
    m.login("alice@example.test", "alice-pw")
    return m


def count(stack: Stack, mailbox: str) -> int:
    m = imap(stack)
    try:
        return int(m.select(mailbox, readonly=True)[1][0])
    finally:
        m.logout()


def test_refused_marked_and_clean_mail_and_a_move_that_teaches(stack, rspamd):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(stack, message("gtube", GTUBE))
    assert (e.value.smtp_code, e.value.smtp_error[:5]) == (550, b"5.7.1")

    send(stack, message("MAILFLOW-TEST-JUNK cheap offer", "A great offer, only today."))
    send(stack, message("lunch", "Shall we meet for lunch on Thursday at noon, at the usual place?"))
    wait_for(lambda: count(stack, "Junk") == 1 and count(stack, "INBOX") == 1, timeout=30, what="one in each")
    m = imap(stack)
    m.select("Junk")
    head = m.fetch("1", "(BODY.PEEK[HEADER])")[1][0][1]
    assert b"\r\nX-Spam: Yes\r\n" in head and b"MAILFLOW_TEST_JUNK" in head

    learned = rspamd.stat()["learned"]
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    m.logout()
    wait_for(lambda: rspamd.stat()["learned"] == learned + 1, timeout=30, what="rspamd learned the move")
