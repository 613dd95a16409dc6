"""What the attack tests share: the user alice@example.test on a stack, and a normal client of each
protocol (smtplib, imaplib, poplib) that connects, logs in where there is a login, and quits."""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Stack


def add_alice(st: Stack) -> None:
    st.cli("domain", "add", "example.test")
    with httpx.Client(
        base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}
    ) as c:
        c.post(
            "/admin/users", json={"address": "alice@example.test", "password": "alice-pw"}
        ).raise_for_status()


def probe_smtp(st: Stack) -> None:
    with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=5) as s:
        s.ehlo("probe.example.test")
        assert s.noop()[0] == 250


def probe_imap(st: Stack) -> None:
    with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=5) as m:
        m.login("alice@example.test", "alice-pw")
        m.select("INBOX")
        m.logout()


def probe_pop3(st: Stack) -> None:
    p = poplib.POP3(st.ports.host, st.ports.pop3, timeout=5)
    try:
        p.user("alice@example.test")
        p.pass_("alice-pw")
        p.stat()
    finally:
        p.quit()


PROBES = {"smtp": probe_smtp, "imap": probe_imap, "pop3": probe_pop3}
