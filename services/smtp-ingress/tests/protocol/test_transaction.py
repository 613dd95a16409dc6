"""MAIL, RCPT, DATA, BDAT and their extensions: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING."""

from __future__ import annotations

import smtplib

from mailflow.errors import ServiceUnavailable


def begin(c, sender="carol@elsewhere.test", *rcpts):
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd(f"MAIL FROM:<{sender}>", "250 2.1.0")
    for r in rcpts:
        c.cmd(f"RCPT TO:<{r}>", "250 2.1.5")


def test_pipelining_one_write_for_the_whole_envelope(raw, srv):
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    c.send_raw(
        b"MAIL FROM:<carol@elsewhere.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
    )
    assert [c.reply()[:9] for _ in range(5)] == [
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "354 End d",
    ]
    c.send_raw(
        b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    assert c.reply().startswith("250 2.0.0 Ok: queued as")
    assert [c.reply()[:9] for _ in range(3)] == ["250 2.1.0", "250 2.1.5", "354 End d"]
    c.send_raw(b"Subject: bounce-like\r\n\r\nnull sender\r\n.\r\nQUIT\r\n")
    c.expect("250 2.0.0")
    c.expect("221 2.0.0")
    assert [[r.address for r in m.rcpt_to] for m, _ in srv.messages] == [
        ["alice@example.test", "bob@example.test"],
        ["alice@example.test"],
    ]
    assert srv.messages[1][0].mail_from == ""


def test_dot_stuffing_is_undone_and_bytes_are_kept(raw, srv):
    c = raw()
    begin(c, "carol@elsewhere.test", "alice@example.test")
    c.cmd("DATA", "354 ")
    body = b"Subject: dots\r\n\r\n..leading dot\r\n.\x2e\r\n...\r\nlast line without dot\r\n"
    c.send_raw(body + b".\r\n")
    c.expect("250 2.0.0")
    got = srv.messages[0][1].split(b"\r\n\r\n", 1)[1]
    assert got == b".leading dot\r\n.\r\n..\r\nlast line without dot\r\n"


def test_empty_message_and_several_transactions_per_connection(raw, srv):
    c = raw()
    for i in range(3):
        begin(c, f"s{i}@elsewhere.test", "alice@example.test")
        c.cmd("DATA", "354 ")
        c.send_raw(b".\r\n" if i == 0 else b"Subject: %d\r\n\r\nx\r\n.\r\n" % i)
        c.expect("250 2.0.0")
    assert [m.mail_from for m, _ in srv.messages] == [
        "s0@elsewhere.test",
        "s1@elsewhere.test",
        "s2@elsewhere.test",
    ]
    empty = srv.messages[0][1]
    assert empty.startswith(b"Received: ") and empty.endswith(
        b" +0000\r\n"
    )  # the trace header and nothing else
    assert empty.count(b"\r\n") == len([ln for ln in empty.split(b"\r\n") if ln])


def test_rset_forgets_the_envelope(raw, srv):
    c = raw()
    begin(c, "carol@elsewhere.test", "alice@example.test")
    c.cmd("RSET", "250 2.0.0")
    c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1")
    c.cmd("MAIL FROM:<dave@elsewhere.test>", "250 2.1.0")
    c.cmd("RCPT TO:<bob@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: after rset\r\n\r\nx\r\n.\r\n")
    c.expect("250 2.0.0")
    ((msg, _),) = srv.messages
    assert msg.mail_from == "dave@elsewhere.test" and [r.address for r in msg.rcpt_to] == ["bob@example.test"]


def test_size_declared_too_big_is_552_at_mail(raw):
    c = raw()
    c.cmd("EHLO c.example.test", "250 ")
    c.cmd(f"MAIL FROM:<a@b.test> SIZE={25 * 1024 * 1024 + 1}", "552 5.3.4")
    c.cmd(f"MAIL FROM:<a@b.test> SIZE={25 * 1024 * 1024}", "250 2.1.0")


def test_size_enforced_while_reading_data(make_server, raw):
    small = make_server(max_message_bytes=10_000)
    c = raw(server=small)
    begin(c, "carol@elsewhere.test", "alice@example.test")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 200 + b".\r\n")
    c.expect("552 5.3.4")
    begin_again = c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")  # the session goes on
    assert begin_again
    assert small.messages == []


def test_8bitmime_smtputf8_and_dsn_parameters_are_kept(raw, srv):
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<jörg@elsewhere.test> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bid+3D7", "250 2.1.0")
    c.cmd(
        "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Bx@example.test", "250 2.1.5"
    )
    c.cmd("RCPT TO:<bob@example.test> NOTIFY=NEVER", "250 2.1.5")
    c.cmd("RCPT TO:<sales@example.test>", "250 2.1.5")  # an alias
    c.cmd("DATA", "354 ")
    c.send_raw("Subject: grüße\r\n\r\nÄÖÜ\r\n.\r\n".encode())
    c.expect("250 2.0.0")
    ((msg, raw_bytes),) = srv.messages
    assert msg.mail_from == "jörg@elsewhere.test" and msg.smtputf8 and msg.body_8bit
    assert msg.ret == "HDRS" and msg.envid == "QQ+id=7"
    a, b, s = msg.rcpt_to
    assert a.notify == ["SUCCESS", "FAILURE"] and a.orcpt == "rfc822;alice+x@example.test"
    assert b.notify == ["NEVER"] and b.orcpt is None
    assert s.address == "sales@example.test" and s.notify == []
    assert b" with UTF8SMTP id " in raw_bytes and "ÄÖÜ".encode() in raw_bytes


def test_utf8_address_needs_smtputf8(raw):
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<jörg@elsewhere.test>", "553 5.6.7")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    c.cmd("RCPT TO:<jörg@example.test>", "553 5.6.7")


def test_smtputf8_needs_ehlo(raw):
    c = raw()
    c.cmd("HELO client.example.test", "250 ")
    c.cmd("MAIL FROM:<a@b.test> SMTPUTF8", "555 5.5.4")


def test_bdat_chunks_with_binary_safe_lengths(raw, srv):
    c = raw()
    begin(c, "carol@elsewhere.test", "alice@example.test")
    part1 = b"Subject: chunked\r\n\r\nfirst part, with a line that is only a dot next:\r\n"
    part2 = b".\r\nand a NUL-free rest\r\n"
    c.send_raw(b"BDAT %d\r\n" % len(part1) + part1)
    c.expect(f"250 2.0.0 {len(part1)} octets received")
    c.send_raw(b"BDAT %d LAST\r\n" % len(part2) + part2)
    c.expect("250 2.0.0 Ok: queued as")
    body = srv.messages[0][1].split(b"\r\n\r\n", 1)[1]
    assert (
        body == b"first part, with a line that is only a dot next:\r\n.\r\nand a NUL-free rest\r\n"
    )  # no unstuffing


def test_bdat_pipelined_and_zero_last(raw, srv):
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    data = b"Subject: x\r\n\r\ny\r\n"
    c.send_raw(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d\r\n%sBDAT 0 LAST\r\n"
        % (len(data), data)
    )
    assert [c.reply()[:9] for _ in range(4)] == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]
    assert srv.messages[0][1].endswith(data)


def test_bdat_and_data_do_not_mix_and_failed_chunks_are_skipped(make_server, raw):
    small = make_server(max_message_bytes=100)
    c = raw(server=small)
    begin(c, "carol@elsewhere.test", "alice@example.test")
    c.send_raw(b"BDAT 3\r\nabc")
    c.expect("250 2.0.0")
    c.cmd("DATA", "503 5.5.1")
    c.send_raw(b"BDAT 200\r\n" + b"z" * 200)
    c.expect("552 5.3.4")
    c.send_raw(b"BDAT 5 LAST\r\nhello")
    c.expect("503 5.5.1")
    c.cmd("NOOP", "250 2.0.0")  # still in sync with the stream
    assert small.messages == []


def test_bad_bdat_size_closes_the_connection(raw):
    c = raw()
    begin(c, "carol@elsewhere.test", "alice@example.test")
    c.send("BDAT lots")
    c.expect("501 5.5.4")
    c.expect("421 4.7.0")
    assert c.closed()


def test_at_most_100_recipients(raw, srv):
    c = raw()
    begin(c, "carol@elsewhere.test")
    for _ in range(100):
        c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", "452 4.5.3")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: many\r\n\r\nx\r\n.\r\n")
    c.expect("250 2.0.0")
    assert len(srv.messages[0][0].rcpt_to) == 100


def test_plus_addressing_catch_all_and_unknown_user(make_server, raw, store):
    store.add_alias("@other.example.test", ["bob@example.test"])
    s = make_server()
    c = raw(server=s)
    begin(c, "carol@elsewhere.test")
    c.cmd("RCPT TO:<alice+news@example.test>", "250 2.1.5")
    c.cmd("RCPT TO:<anything@other.example.test>", "250 2.1.5")
    reply = c.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
    assert "<nobody@example.test>" in reply
    c.cmd("RCPT TO:<Alice@EXAMPLE.TEST>", "250 2.1.5")
    c.cmd("RCPT TO:<postmaster>", "550 5.7.1")  # postmaster@<hostname>: not a local domain here


def test_directory_down_is_451_443_never_550(make_server, raw, directory):
    directory.down = True
    s = make_server()
    c = raw(server=s)
    begin(c, "carol@elsewhere.test")
    c.cmd("RCPT TO:<alice@example.test>", "451 4.4.3")
    c.cmd("RCPT TO:<nobody@example.test>", "451 4.4.3")
    directory.down = False
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")  # failures are never cached


def test_queue_failure_is_451_430_and_nothing_half_accepted(srv):
    srv.queue.fail = ServiceUnavailable("JetStream gone")
    with smtplib.SMTP("127.0.0.1", srv.port(), timeout=10) as s:
        s.ehlo("client.example.test")
        s.mail("carol@elsewhere.test")
        s.rcpt("alice@example.test")
        code, text = s.data(b"Subject: x\r\n\r\nbody\r\n")
        assert (code, text[:5]) == (451, b"4.3.0")
        srv.queue.fail = RuntimeError("something unexpected")
        s.mail("carol@elsewhere.test")
        s.rcpt("alice@example.test")
        code, text = s.data(b"Subject: x\r\n\r\nbody\r\n")
        assert code == 451 and text.startswith(b"4.3.0") and b"ref " in text and b"RuntimeError" not in text
        srv.queue.fail = None
        s.mail("carol@elsewhere.test")
        s.rcpt("alice@example.test")
        assert s.data(b"Subject: x\r\n\r\nbody\r\n")[0] == 250
    assert len(srv.messages) == 1


def test_recipient_lookups_are_cached(srv, raw):
    c = raw()
    begin(c, "carol@elsewhere.test")
    for _ in range(5):
        c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    assert srv.directory.resolves.count("alice@example.test") == 1
