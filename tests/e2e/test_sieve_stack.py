"""Sieve end to end: a script uploaded over ManageSieve (imap-pop3's port, STARTTLS, AUTHENTICATE PLAIN)
files mail that arrives over SMTP into an IMAP folder with its flags; other mail stays in INBOX; the
six services are real processes."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket

import pytest

from tests.e2e.course import unverified
from tests.support import wait_for
from tests.support.dns import DnsServer
from tests.support.stacks import example_test


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The e2e stack (tests/e2e/conftest.py), with delivery reading scripts afresh for every message
    (MAILFLOW_DELIVERY_SIEVE_CACHE_S=0): each test uploads its own."""
    env = {"MAILFLOW_DELIVERY_SIEVE_CACHE_S": "0"}
    with DnsServer("") as dns:
        with example_test(tmp_path_factory.mktemp("stack"), {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address, **env}) as st:
            yield st

SCRIPT = (
    b'require ["fileinto", "imap4flags", "mailbox"];\r\n'
    b'if header :contains "subject" "[report]" {\r\n'
    b'  addflag "$Report";\r\n'
    b'  fileinto :create "Reports";\r\n'
    b"}\r\n"
)


class Sieve:
    """A ManageSieve client typed at like telnet: a line out, response lines back up to OK/NO/BYE."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self) -> list[bytes]:
        lines = [self.line()]
        while lines[-1].split(b" ", 1)[0] not in (b"OK", b"NO", b"BYE"):
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> list[bytes]:
        self.sock.sendall(data)
        return self.response()


def upload(stack) -> None:
    c = Sieve(stack.ports.host, stack.ports.managesieve)
    assert b'"STARTTLS"' in c.response()
    assert c.send(b"STARTTLS\r\n") == [b'OK "Begin TLS negotiation now"']
    c.sock = unverified().wrap_socket(c.sock)
    assert c.response()[-1] == b'OK "TLS active"'
    token = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    assert c.send(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode()) == [b'OK "Logged in"']
    assert c.send(b'PUTSCRIPT "main" {%d+}\r\n' % len(SCRIPT) + SCRIPT + b"\r\n") == [b'OK "Script stored"']
    assert c.send(b'SETACTIVE "main"\r\n') == [b'OK "Active script set"']
    assert c.send(b"LISTSCRIPTS\r\n") == [b'"main" ACTIVE', b'OK "Listscripts completed"']
    c.send(b"LOGOUT\r\n")


def send(stack, subject: str) -> None:
    raw = f"From: carol@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.sendmail("carol@elsewhere.test", ["alice@example.test"], raw.encode())


def count(stack, mailbox: str) -> int:
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
        m.login("alice@example.test", "alice-pw")
        typ, data = m.status(mailbox, "(MESSAGES)")
        if typ != "OK":
            return 0
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))


def test_a_managesieve_script_files_smtp_mail_into_an_imap_folder(stack):
    upload(stack)
    send(stack, "[report] numbers")
    send(stack, "lunch?")
    wait_for(lambda: count(stack, "Reports") == 1 and count(stack, "INBOX") == 1, timeout=30, what="both filed")
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
        m.login("alice@example.test", "alice-pw")
        m.select("Reports")
        typ, data = m.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"$Report" in data[0][0] and b"[report] numbers" in data[0][1]
        m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"lunch?" in data[0][1]


AWAY = (
    b'require ["vacation"];\r\n'
    b'if header :contains "subject" "forward me" { redirect "bob@example.test"; stop; }\r\n'
    b'vacation :days 1 :subject "Alice is away" "Back on Monday.";\r\n'
)


def put_active(stack, script: bytes) -> None:
    c = Sieve(stack.ports.host, stack.ports.managesieve)
    c.response()  # on loopback a password may go without TLS
    token = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    assert c.send(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode()) == [b'OK "Logged in"']
    assert c.send(b'PUTSCRIPT "away" {%d+}\r\n' % len(script) + script + b"\r\n") == [b'OK "Script stored"']
    assert c.send(b'SETACTIVE "away"\r\n') == [b'OK "Active script set"']
    c.send(b"LOGOUT\r\n")


def subjects_of(stack, user: str, password: str) -> list[bytes]:
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
        m.login(user, password)
        m.select("INBOX")
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [part[1].strip() for part in data if isinstance(part, tuple)]


def test_redirect_and_vacation_go_through_the_queue(stack):
    put_active(stack, AWAY)
    with smtplib.SMTP(stack.ports.host, stack.ports.submission, timeout=30) as s:
        s.starttls(context=unverified())
        s.login("bob@example.test", "bob-pw")
        s.sendmail("bob@example.test", ["alice@example.test"],
                   b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: lunch on friday\r\n\r\nHi.\r\n")
    send(stack, "please forward me")  # from carol, over port 25
    wait_for(lambda: len(subjects_of(stack, "bob@example.test", "bob-pw")) >= 2, timeout=30, what="bob's two")
    bobs = subjects_of(stack, "bob@example.test", "bob-pw")
    assert sorted(bobs) == [b"Subject: Alice is away", b"Subject: please forward me"]
    alices = subjects_of(stack, "alice@example.test", "alice-pw")
    assert b"Subject: lunch on friday" in alices and b"Subject: please forward me" not in alices
