"""CATENATE (RFC 4469): APPEND of a message made of TEXT literals and IMAP URLs (RFC 5092) of the user's own
messages and sections; with MULTIAPPEND; BADURL for every URL that is not the user's or not usable,
TOOBIG over APPENDLIMIT; hostile input (many URLs, deep sections, junk)."""

from __future__ import annotations

import re

from imaptest import Raw, make_message


def session(srv, user="alice") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send(f"a0 LOGIN {user}@example.test {user}-pw")
    c.until("a0")
    return c


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def multipart(subject: str, first: str, second: str) -> bytes:
    return (
        f"From: carol@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{first}\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\n{second}\r\n--b--\r\n"
    ).encode()


def uidvalidity(c: Raw, mailbox: str = "INBOX") -> int:
    c.send(f"v1 STATUS {mailbox} (UIDVALIDITY)")
    return int(re.search(rb"UIDVALIDITY (\d+)", c.until("v1")[0]).group(1))


def body_of(c: Raw, mailbox: str, uid: int) -> bytes:
    c.send(f"f1 EXAMINE {mailbox}")
    c.until("f1")
    c.send(f"f2 UID FETCH {uid} BODY.PEEK[]")
    line = c.until("f2")[0]
    return line.split(b"}\r\n", 1)[1][:-1]


def test_parts_of_two_messages_and_text(srv):
    srv.deliver("alice@example.test", multipart("one", "first part of one", "second part of one"))
    srv.deliver("alice@example.test", make_message("two", body="body of two\n"))
    c = session(srv)
    c.send("a1 CAPABILITY")
    assert b" CATENATE" in c.until("a1")[0]
    v = uidvalidity(c)
    head = b"From: alice@example.test\r\nSubject: made of parts\r\n\r\n"
    c.send_raw(
        b"a2 APPEND Drafts (\\Draft) CATENATE (TEXT " + literal(head)
        + b" URL \"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2\"" % v
        + b" TEXT " + literal(b"\r\n--\r\n")
        + b' URL "imap://alice%40example.test@localhost/INBOX/;UID=2/;SECTION=TEXT"'
        + b' URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)/;PARTIAL=0.8")\r\n'
    )  # fmt: skip
    reply = c.until("a2")[-1]
    assert re.fullmatch(rb"a2 OK \[APPENDUID \d+ 1\] APPEND completed", reply), reply
    assert (
        body_of(c, "Drafts", 1)
        == head + b"second part of one" + b"\r\n--\r\n" + b"body of two\r\n" + b"Subject:"
    )


def test_catenate_with_multiappend_and_relative_urls(srv):
    srv.deliver("alice@example.test", make_message("base", body="the base\n"))
    c = session(srv)
    c.send("a1 SELECT INBOX")
    c.until("a1")
    plain = make_message("plain")
    c.send_raw(
        b"a2 APPEND Archive " + literal(plain)
        + b" CATENATE (URL \";UID=1/;SECTION=TEXT\" TEXT " + literal(b"tail\r\n") + b")"
        + b" (\\Seen) CATENATE (URL /INBOX/;UID=1)\r\n"
    )  # fmt: skip
    reply = c.until("a2")[-1]
    assert re.fullmatch(rb"a2 OK \[APPENDUID \d+ 1:3\] APPEND completed", reply), reply
    assert body_of(c, "Archive", 1) == plain
    assert body_of(c, "Archive", 2) == b"the base\r\ntail\r\n"
    c.send("a3 SELECT INBOX")
    c.until("a3")
    c.send("a4 UID FETCH 1 BODY.PEEK[]")
    original = c.until("a4")[0].split(b"}\r\n", 1)[1][:-1]
    assert body_of(c, "Archive", 3) == original


def test_another_users_mail_is_never_reached(srv):
    srv.deliver("bob@example.test", make_message("bob's secret", to="bob@example.test", body="secret\n"))
    srv.deliver("alice@example.test", make_message("alice's"))
    bob = session(srv, "bob")
    bob_v = uidvalidity(bob)
    c = session(srv)
    for n, url in enumerate([
        f"imap://bob%40example.test@localhost/INBOX;UIDVALIDITY={bob_v}/;UID=1",  # bob's, by name
        "imap://bob@localhost/INBOX/;UID=1",
        "imap://alice%40example.test@mail.elsewhere.test/INBOX/;UID=1",  # another server
        "imap://localhost/INBOX/;UID=1",  # anonymous
    ]):  # fmt: skip
        c.send_raw(b'b%d APPEND Drafts CATENATE (URL "%s")\r\n' % (n, url.encode()))
        reply = c.until(f"b{n}")[-1]
        assert reply.startswith(b"b%d NO [BADURL " % n), (url, reply)
        assert b"secret" not in reply
    c.send("s1 STATUS Drafts (MESSAGES)")
    assert c.until("s1")[0] == b'* STATUS "Drafts" (MESSAGES 0)'
    # a URL without a user is alice's own INBOX, whoever else has one: UID 1 there is alice's message
    c.send_raw(b'b9 APPEND Drafts CATENATE (URL "/INBOX/;UID=1")\r\n')
    assert c.until("b9")[-1].startswith(b"b9 OK")
    assert b"alice's" in body_of(c, "Drafts", 1) and b"secret" not in body_of(c, "Drafts", 1)


def test_badurl_answers(srv):
    srv.deliver("alice@example.test", make_message("one"))
    c = session(srv)
    for n, url in enumerate([
        "/INBOX/;UID=9",  # no such message
        "/Nowhere/;UID=1",  # no such mailbox
        "/INBOX;UIDVALIDITY=1/;UID=1",  # UIDVALIDITY changed
        ";UID=1",  # relative, nothing selected
        "/INBOX",  # a mailbox, not a message
        "/INBOX/;UID=0",
        "/INBOX/;UID=1/;SECTION=1.HEADER.X",
        "/INBOX/;UID=1/;SECTION=%zz",
        "/INBOX/;UID=1;SECTION=1",  # "/" missing
        "/INBOX/;SECTION=1/;UID=1",  # out of order
        "/INBOX/;UID=1/;URLAUTH=anonymous:internal:1234",
        "http://example.test/",
        "/INBOX/;UID=1?x",
    ]):  # fmt: skip
        c.send_raw(b'b%d APPEND Drafts CATENATE (URL "%s")\r\n' % (n, url.encode()))
        reply = c.until(f"b{n}")[-1]
        assert re.fullmatch(rb"b%d NO \[BADURL [!-\\^-~]+\] CATENATE refused: .*" % n, reply), (url, reply)
    # a URL with a "]" or CR LF in it comes back escaped, so the response code stays whole
    c.send_raw(b"c1 APPEND Drafts CATENATE (URL {12+}\r\n/INBOX]\r\nx\x00y)\r\n")
    assert c.until("c1")[-1] == b"c1 NO [BADURL /INBOX%5D%0D%0Ax%00y] CATENATE refused: not an IMAP URL"
    c.send("c2 STATUS Drafts (MESSAGES)")
    assert c.until("c2")[0] == b'* STATUS "Drafts" (MESSAGES 0)'


def test_toobig_counts_what_the_urls_bring(tmp_path, store):
    from imaptest import Running, settings_for

    srv = Running(settings_for(tmp_path, max_append_bytes=4000), store)
    try:
        srv.deliver("alice@example.test", make_message("big", body="z" * 2500))
        c = session(srv)
        c.send_raw(b"a1 APPEND Drafts CATENATE (URL /INBOX/;UID=1 TEXT " + literal(b"x" * 10) + b")\r\n")
        assert c.until("a1")[-1].startswith(b"a1 OK")
        c.send_raw(b"a2 APPEND Drafts CATENATE (URL /INBOX/;UID=1 URL /INBOX/;UID=1)\r\n")
        assert c.until("a2")[-1] == b"a2 NO [TOOBIG] Message too big (the limit is 4000 octets)"
        c.send("a3 STATUS Drafts (MESSAGES)")
        assert c.until("a3")[0] == b'* STATUS "Drafts" (MESSAGES 1)'
    finally:
        srv.stop()


def test_hostile_input(srv):
    srv.deliver("alice@example.test", make_message("one"))
    c = session(srv)
    many = b" ".join([b"URL /INBOX/;UID=1"] * 65)
    c.send_raw(b"a1 APPEND Drafts CATENATE (" + many + b")\r\n")
    assert c.until("a1")[-1] == b"a1 NO [LIMIT] Too many CATENATE URLs (the limit is 64)"
    deep = ".".join(["1"] * 101)
    c.send_raw(b"a2 APPEND Drafts CATENATE (URL /INBOX/;UID=1/;SECTION=" + deep.encode() + b")\r\n")
    assert c.until("a2")[-1].startswith(b"a2 NO [BADURL ")
    c.send_raw(b"a3 APPEND Drafts CATENATE (URL /" + b"a" * 3000 + b"/;UID=1)\r\n")
    assert c.until("a3")[-1].startswith(b"a3 NO [BADURL ")
    c.send_raw(b"a4 APPEND Drafts CATENATE ()\r\n")
    assert c.until("a4")[-1].startswith(b"a4 BAD")
    c.send_raw(b'a5 APPEND Drafts CATENATE (TEXT "quoted")\r\n')  # TEXT takes a literal only
    assert c.until("a5")[-1].startswith(b"a5 BAD")
    c.send_raw(b"a6 APPEND Drafts CATENATE (TEXT {0+}\r\n)\r\n")
    assert c.until("a6")[-1] == b"a6 NO [CANNOT] Cannot append an empty message"
    c.send("a7 NOOP")
    assert c.until("a7") == [b"a7 OK NOOP completed"]
