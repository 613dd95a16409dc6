"""The promise of push, end to end: a message sent by SMTP while a client IDLEs shows up as `* n EXISTS`
within one second (smtp-ingress -> queue -> delivery -> mailbox-store -> NATS event -> imap-pop3)."""

from __future__ import annotations

import smtplib
import time

from imaptest import Raw, make_message


def test_smtp_delivery_reaches_an_idle_client_within_a_second(stack):
    c = Raw(stack.ports.host, stack.ports.imap)
    c.line()
    assert c.cmd("a1", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a1 OK")
    exists = int(next(ln.split()[1] for ln in c.cmd("a2", "SELECT INBOX") if ln.endswith(b"EXISTS")))
    c.send("a3 IDLE")
    assert c.line() == b"+ idling"
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        for n in range(1, 4):
            s.sendmail("carol@elsewhere.test", ["alice@example.test"], make_message(f"push {n}"))
            t0 = time.monotonic()  # the 250 came back: the message is queued, durable
            c.sock.settimeout(1.0)
            while not (line := c.line()).endswith(b"EXISTS"):
                pass
            elapsed = time.monotonic() - t0
            assert int(line.split()[1]) == exists + n
            assert elapsed < 1.0, elapsed
    c.sock.settimeout(10)
    c.send("DONE")
    assert c.until("a3")[-1] == b"a3 OK IDLE terminated"
    lines = c.cmd("a4", "FETCH * (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: push 3" in lines[0]


def test_sigterm_says_bye_to_idle_clients_and_exits(stack):
    c = Raw(stack.ports.host, stack.ports.imap)
    c.line()
    c.cmd("a1", "LOGIN bob@example.test bob-pw")
    c.cmd("a2", "SELECT INBOX")
    c.send("a3 IDLE")
    assert c.line() == b"+ idling"
    t0 = time.monotonic()
    proc = stack.procs[("imap-pop3", 0)].popen
    stack.stop_service("imap-pop3")  # SIGTERM, waits for the exit
    assert proc.returncode == 0
    assert c.line() == b"* BYE Server shutting down, please reconnect"
    assert c.closed()
    assert time.monotonic() - t0 < 5
    stack.start_service("imap-pop3")
    c = Raw(stack.ports.host, stack.ports.imap)
    assert c.line().startswith(b"* OK")
