"""The basic command set as transcripts (RFC 5321 §4.1, RFC 2034 enhanced codes on every reply)."""

from __future__ import annotations

import re
import smtplib

ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")


def test_greeting_and_ehlo_extensions(raw):
    c = raw(greet=False)
    assert c.reply() == "220 mx.example.test ESMTP Mailflow"
    ehlo = c.cmd("EHLO client.example.test", "250 ")
    lines = [line[4:] for line in ehlo.split("\n")]
    assert lines[0] == "mx.example.test Hello client.example.test"
    for ext in (
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
        "DSN",
    ):
        assert ext in lines, ext
    assert not any(x.startswith("AUTH") for x in lines)  # the MX listener offers no AUTH


def test_helo_noop_rset_vrfy_help_quit(raw):
    c = raw()
    assert c.cmd("HELO client.example.test", "250 ") == "250 mx.example.test"
    c.cmd("NOOP", "250 2.0.0")
    c.cmd("NOOP anything goes", "250 2.0.0")
    c.cmd("RSET", "250 2.0.0")
    c.cmd("RSET now", "501 5.5.4")
    c.cmd("VRFY alice", "252 2.5.2")
    c.cmd("VRFY", "501 5.5.4")
    c.cmd("EXPN staff", "502 5.5.1")
    c.cmd("HELP", "214 2.0.0")
    c.cmd("QUIT", "221 2.0.0")
    assert c.closed()


def test_unknown_command_and_syntax_errors(raw):
    c = raw()
    c.cmd("FOO bar", "500 5.5.1")
    c.cmd("TURN", "500 5.5.1")
    c.cmd("EHLO", "501 5.5.4")
    c.cmd("HELO", "501 5.5.4")
    c.cmd("EHLO c.example.test", "250 ")
    c.cmd("MAIL TO:<a@b.test>", "501 5.5.4")
    c.cmd("MAIL FROM:<not an address>", "501 5.1.7")
    c.cmd("MAIL FROM:<a@b.test> FOO=bar", "555 5.5.4")
    c.cmd("MAIL FROM:<a@b.test> SIZE=abc", "501 5.5.4")
    c.cmd("MAIL FROM:<a@b.test> BODY=BINARYMIME", "501 5.5.4")
    c.cmd("MAIL FROM:<a@b.test> SIZE=1 SIZE=2", "501 5.5.4")
    c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")
    c.cmd("RCPT FROM:<alice@example.test>", "501 5.5.4")
    c.cmd("RCPT TO:<alice@>", "501 5.1.3")
    c.cmd("RCPT TO:<alice@example.test> NOTIFY=SOMETIMES", "501 5.5.4")
    c.cmd("RCPT TO:<alice@example.test> XYZ", "555 5.5.4")
    c.cmd("DATA now", "501 5.5.4")


def test_bad_sequence_is_503(raw):
    c = raw()
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")  # before HELO/EHLO
    c.cmd("EHLO c.example.test", "250 ")
    c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1")  # before MAIL
    c.cmd("DATA", "503 5.5.1")
    c.cmd("BDAT 0 LAST", "503 5.5.1")
    c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")  # nested
    c.cmd("DATA", "554 5.5.1")  # no valid recipients
    c.cmd("RSET", "250 2.0.0")
    c.cmd("STARTTLS extra", "501 5.5.4")


def test_every_reply_carries_an_enhanced_code(raw):
    c = raw()
    c.cmd("EHLO c.example.test", "250 ")
    transcript = []
    for line in [
        "NOOP",
        "MAIL FROM:<x@b.test>",
        "RCPT TO:<alice@example.test>",
        "RCPT TO:<nobody@example.test>",
        "RCPT TO:<r@elsewhere.test>",
        "VRFY x",
        "HELP",
        "FOO",
        "RSET",
        "AUTH PLAIN",
        "QUIT",
    ]:
        c.send(line)
        transcript.append(c.reply())
    for reply in transcript:
        for line in reply.split("\n"):
            assert ENHANCED.match(line), line


def test_smtplib_happy_path_is_queued(srv):
    with smtplib.SMTP("127.0.0.1", srv.port(), timeout=10) as s:
        s.ehlo("client.example.test")
        assert s.has_extn("pipelining") and s.has_extn("size")
        refused = s.sendmail(
            "carol@elsewhere.test",
            ["alice@example.test", "bob@example.test"],
            b"Subject: hi\r\n\r\nHello\r\n",
        )
        assert refused == {}
    ((msg, raw),) = srv.messages
    assert msg.mail_from == "carol@elsewhere.test"
    assert [r.address for r in msg.rcpt_to] == ["alice@example.test", "bob@example.test"]
    assert raw.startswith(
        b"Received: from client.example.test ([127.0.0.1])\r\n\tby mx.example.test (Mailflow) with ESMTP id "
    )
    assert raw.endswith(b"Subject: hi\r\n\r\nHello\r\n")
    assert msg.size == len(raw)
    assert (
        msg.client.listener == "mx"
        and msg.client.helo == "client.example.test"
        and msg.client.ip == "127.0.0.1"
    )


def test_250_names_the_queue_id(raw, srv):
    c = raw()
    c.cmd("EHLO c.example.test", "250 ")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send("Subject: x\r\n\r\nbody\r\n.")
    done = c.expect("250 2.0.0 Ok: queued as ")
    queue_id = done.rsplit(" ", 1)[1]
    assert srv.messages[0][0].queue_id == queue_id
    assert f"id {queue_id}".encode() in srv.messages[0][1]
    assert b"for <alice@example.test>;" in srv.messages[0][1]  # one recipient: named in Received
