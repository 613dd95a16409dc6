"""MULTIAPPEND (RFC 3502): several messages in one APPEND, each with its own flags and date, stored with
consecutive UIDs (APPENDUID names them all), or none of them when one cannot be stored."""

from __future__ import annotations

from imaptest import Raw, make_message


def session(srv) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a0 LOGIN alice@example.test alice-pw")
    c.until("a0")
    return c


def literal(msg: bytes) -> bytes:
    return b"{%d+}\r\n" % len(msg) + msg


def test_three_messages_in_one_append(srv):
    c = session(srv)
    c.send("a1 CAPABILITY")
    assert b" MULTIAPPEND" in c.until("a1")[0]
    one, two, three = (make_message(f"m{i}") for i in (1, 2, 3))
    c.send_raw(
        b"a2 APPEND INBOX (\\Seen) " + literal(one)
        + b' (\\Flagged $Work) " 1-Jan-2026 10:00:00 +0000" ' + literal(two)
        + b" " + literal(three) + b"\r\n"
    )  # fmt: skip
    reply = c.until("a2")[-1]
    assert reply.startswith(b"a2 OK [APPENDUID ") and reply.split()[4] == b"1:3]", reply
    c.send("a3 SELECT INBOX")
    assert b"* 3 EXISTS" in c.until("a3")
    c.send("a4 FETCH 1:3 (UID FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    lines = c.until("a4")
    assert b"UID 1 FLAGS (\\Seen \\Recent)" in lines[0] and b"Subject: m1" in lines[0]
    assert b"FLAGS (\\Flagged $Work \\Recent)" in lines[1] and b'"01-Jan-2026 10:00:00 +0000"' in lines[1]
    assert b"UID 3 FLAGS (\\Recent)" in lines[2] and b"Subject: m3" in lines[2]


def test_all_or_nothing(srv, store):
    store.set_quota("alice@example.test", 6000)
    c = session(srv)
    small, big = make_message("fits"), make_message("too big", body="x" * 8000)
    c.send_raw(b"a1 APPEND INBOX " + literal(small) + b" " + literal(big) + b"\r\n")
    assert c.until("a1")[-1].startswith(b"a1 NO [OVERQUOTA]")
    c.send("a2 STATUS INBOX (MESSAGES)")
    assert c.until("a2")[0] == b'* STATUS "INBOX" (MESSAGES 0)'  # the one that fitted is not kept either
    c.send_raw(b"a3 APPEND Nothere " + literal(small) + b" " + literal(small) + b"\r\n")
    assert c.until("a3")[-1].startswith(b"a3 NO [TRYCREATE]")
    c.send_raw(b"a4 APPEND INBOX " + literal(small) + b" {0+}\r\n\r\n")
    assert c.until("a4")[-1].startswith(b"a4 NO [CANNOT]")


def test_the_whole_command_counts_against_appendlimit(srv):
    limit = srv.settings.max_append_bytes
    c = session(srv)
    half = make_message("half", body="y" * (limit // 2))
    c.send(b"a1 APPEND INBOX " + b"{%d}" % len(half))
    assert c.line().startswith(b"+ ")
    c.send_raw(half + b" {%d}\r\n" % len(half))
    reply = c.line()
    assert b"TOOBIG" in reply, reply  # the second literal would take the command past the limit
