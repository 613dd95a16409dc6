"""The foundation's promise, end to end: SMTP in, through NATS and the store, POP3 and IMAP out.

Six real service processes, a real nats-server, real clients (smtplib, poplib, imaplib) and a raw
socket typed at like telnet. Bytes read back must equal the bytes sent (after the Received: line).
"""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import socket
import uuid
from email.message import EmailMessage

import pytest

from tests.support import wait_for


def make_message(to: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Carol <carol@elsewhere.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@elsewhere.test>"
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0000"
    msg.set_content("Hello from the pipeline.\n.leading dot line\nlast line\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def send(stack, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.sendmail("carol@elsewhere.test", [rcpt], raw)


def strip_trace(raw: bytes) -> bytes:
    """Drop the trace lines the pipeline prepends: Return-Path: (final delivery), Received: and
    Authentication-Results: (smtp-ingress), folded continuation lines included."""
    lines = raw.split(b"\r\n")
    i = 0
    trace = (b"return-path:", b"received:", b"authentication-results:")
    while i < len(lines) and (lines[i].lower().startswith(trace) or (i and lines[i][:1] in (b" ", b"\t"))):
        i += 1
    return b"\r\n".join(lines[i:])


def pop3(stack, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(stack.ports.host, stack.ports.pop3, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def pop3_count(stack, user: str, password: str) -> int:
    p = pop3(stack, user, password)
    try:
        return p.stat()[0]
    finally:
        p.quit()


def test_smtp_to_pop3_bytes_match_and_dele_removes(stack):
    raw = make_message("alice@example.test", "to pop3")
    send(stack, "alice@example.test", raw)
    wait_for(lambda: pop3_count(stack, "alice@example.test", "alice-pw") >= 1, timeout=20, what="message in POP3")
    p = pop3(stack, "alice@example.test", "alice-pw")
    count, _size = p.stat()
    assert count == 1
    _resp, lines, _octets = p.retr(1)
    got = b"\r\n".join(lines) + b"\r\n"
    assert strip_trace(got) == raw
    assert got.startswith(b"Return-Path: <carol@elsewhere.test>\r\nReceived: ")
    p.dele(1)
    p.quit()
    assert pop3_count(stack, "alice@example.test", "alice-pw") == 0


def test_smtp_to_imap_bytes_match_and_message_stays(stack):
    raw = make_message("bob@example.test", "to imap")
    send(stack, "bob@example.test", raw)

    def arrived():
        with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
            m.login("bob@example.test", "bob-pw")
            m.select("INBOX")
            typ, data = m.uid("SEARCH", None, "ALL")
            return data[0].split()

    uids = wait_for(arrived, timeout=20, what="message in IMAP")
    for _ in range(2):  # read twice: IMAP keeps the server copy
        with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
            m.login("bob@example.test", "bob-pw")
            typ, data = m.select("INBOX")
            assert typ == "OK" and int(data[0]) == 1
            typ, data = m.uid("FETCH", uids[0].decode(), "(FLAGS BODY.PEEK[])")
            assert typ == "OK"
            assert strip_trace(data[0][1]) == raw
            typ, data = m.search(None, "ALL")
            assert data[0] == b"1"
            typ, data = m.fetch("1", "(FLAGS)")
            assert typ == "OK" and b"FLAGS" in data[0]


def test_unknown_local_user_and_foreign_domain_are_refused(stack):
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.mail("carol@elsewhere.test")
        code, text = s.rcpt("nobody@example.test")
        assert code == 550 and text.startswith(b"5.1.1")
        code, text = s.rcpt("someone@not-ours.test")
        assert code in (550, 554) and text.startswith(b"5.7.1")


class Telnet:
    """A person at a terminal: send a line, read what comes back."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=20)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def reply(self) -> bytes:
        """An SMTP reply: the last line of a multi-line reply."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def close(self) -> None:
        self.sock.close()


def test_by_hand_like_telnet(stack):
    t = Telnet(stack.ports.host, stack.ports.smtp)
    assert t.reply().startswith(b"220 ")
    for cmd, code in [
        ("HELO my.laptop.test", b"250"),
        ("MAIL FROM:<carol@elsewhere.test>", b"250"),
        ("RCPT TO:<alice@example.test>", b"250"),
        ("DATA", b"354"),
    ]:
        t.send(cmd)
        assert t.reply().startswith(code), cmd
    t.send("Subject: typed by hand\r\n\r\nHi Alice, typed in telnet.\r\n.")
    done = t.reply()
    assert done.startswith(b"250") and b"queued as" in done
    t.send("QUIT")
    assert t.reply().startswith(b"221")
    t.close()

    wait_for(lambda: pop3_count(stack, "alice@example.test", "alice-pw") >= 1, timeout=20, what="typed message")
    p = Telnet(stack.ports.host, stack.ports.pop3)
    assert p.line().startswith(b"+OK")
    p.send("USER alice@example.test")
    assert p.line().startswith(b"+OK")
    p.send("PASS alice-pw")
    assert p.line().startswith(b"+OK")
    p.send("RETR 1")
    assert p.line().startswith(b"+OK")
    body = []
    while (line := p.line()) != b".":
        body.append(line)
    assert b"Hi Alice, typed in telnet." in body
    p.send("QUIT")
    assert p.line().startswith(b"+OK")
    p.close()

    i = Telnet(stack.ports.host, stack.ports.imap)
    assert i.line().startswith(b"* OK")
    i.send("a1 LOGIN alice@example.test alice-pw")
    while not (line := i.line()).startswith(b"a1 "):
        pass
    assert line.startswith(b"a1 OK")
    i.send("a2 SELECT INBOX")
    while not (line := i.line()).startswith(b"a2 "):
        pass
    assert line.startswith(b"a2 OK")
    i.send("a3 LOGOUT")
    while not (line := i.line()).startswith(b"a3 "):
        pass
    assert line.startswith(b"a3 OK")
    i.close()


@pytest.mark.parametrize("wrong", ["bad-pw", ""])
def test_wrong_password_is_refused_everywhere(stack, wrong):
    with pytest.raises(poplib.error_proto):
        pop3(stack, "alice@example.test", wrong or "x")
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m, pytest.raises(imaplib.IMAP4.error):
        m.login("alice@example.test", wrong or "x")


def test_mailflow_trace_shows_the_journey_of_a_real_message(stack):
    """Issue 7's promise: `mailflow trace <queue-id>` follows one message through every service."""
    raw = make_message("alice@example.test", "traced")
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.mail("carol@elsewhere.test")
        s.rcpt("alice@example.test")
        code, text = s.data(raw)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[-1]
    wait_for(lambda: pop3_count(stack, "alice@example.test", "alice-pw") >= 1, timeout=20, what="message in POP3")
    p = pop3(stack, "alice@example.test", "alice-pw")
    n = p.stat()[0]
    assert b"Subject: traced" in b"\r\n".join(p.retr(n)[1])  # the first read: step "retrieved"
    p.dele(n)
    p.quit()
    order = ["ingress", "queue", "resolver", "delivery", "mailbox", "retrieved"]

    def journey():
        events = json.loads(stack.cli("trace", queue_id, "--json").stdout)
        steps = [e["step"] for e in events]
        return events if set(order) <= set(steps) else None

    events = wait_for(journey, timeout=20, what="six steps in mailflow trace")
    assert len({e["trace_id"] for e in events}) == 1
    firsts = [next(i for i, e in enumerate(events) if e["step"] == step) for step in order]
    assert firsts == sorted(firsts), [e["step"] for e in events]
    human = stack.cli("trace", queue_id).stdout
    for step in order:
        assert step in human
