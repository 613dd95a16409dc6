"""Limits and bad input (issue 3 §5), each with its own test, SMTP smuggling included."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import wait_for


def begin(c, *rcpts):
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    for r in rcpts or ("alice@example.test",):
        c.cmd(f"RCPT TO:<{r}>", "250 2.1.5")


def test_command_line_limit_is_512_octets(raw):
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("NOOP " + "x" * (512 - 7), "250 2.0.0")  # exactly 512 with CRLF
    c.cmd("NOOP " + "x" * (512 - 6), "500 5.5.2")
    c.cmd("NOOP", "250 2.0.0")


def test_a_huge_line_without_end_is_skipped_whole(raw):
    c = raw()
    c.send_raw(b"NOOP " + b"y" * 300_000)  # far past every buffer limit, no CRLF yet
    c.send_raw(b"z" * 1000 + b"\r\nNOOP\r\n")
    c.expect("500 5.5.2")
    c.expect("250 2.0.0")  # the next command is read correctly


def test_text_line_limit_is_1000_octets(raw, srv):
    c = raw()
    begin(c)
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: ok\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n")
    c.expect("250 2.0.0")
    begin_again = c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    assert begin_again
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: too long\r\n\r\n" + b"a" * 999 + b"\r\n.\r\n")
    c.expect("500 5.5.2")
    assert len(srv.messages) == 1


def test_nul_in_a_command_and_in_data(raw, srv):
    c = raw()
    c.send_raw(b"EHLO cli\x00ent\r\n")
    c.expect("500 5.5.2")
    begin(c)
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: nul\r\n\r\nbin\x00ary\r\n.\r\n")
    c.expect("550 5.6.0")
    assert srv.messages == []


def test_bare_lf_and_bare_cr_in_commands_are_not_executed(raw, srv):
    c = raw()
    c.send_raw(b"EHLO client.example.test\n")
    c.send_raw(b"NOOP\r\n")
    c.expect("500 5.5.2")  # the line ended by a bare LF
    c.expect("250 2.0.0")
    c.send_raw(b"EHLO client.example.test\r\n")
    c.expect("250 ")
    c.send_raw(b"MAIL FROM:<a@b.test>\rRCPT TO:<alice@example.test>\r\n")
    c.expect("500 5.5.2")
    c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1")  # the MAIL above was not taken


SMUGGLING = [
    b"\n.\n",  # the CVE-2023-51766 class: LF.LF
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
]


@pytest.mark.parametrize("end", SMUGGLING, ids=[repr(e) for e in SMUGGLING])
def test_smtp_smuggling_cannot_end_data_early(raw, srv, end):
    c = raw()
    begin(c)
    c.cmd("DATA", "354 ")
    smuggled = b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
    c.send_raw(b"Subject: outer\r\n\r\nhello" + end + smuggled + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
    reply = c.reply()
    assert reply.startswith("550 5.6.0")  # one answer for the whole thing: refused
    c.cmd("NOOP", "250 2.0.0")  # and nothing else was executed
    assert srv.messages == []


def test_idle_timeout_closes_with_421(make_server, raw):
    s = make_server(idle_timeout=0.3)
    c = raw(server=s)
    c.cmd("EHLO client.example.test", "250 ")
    started = time.monotonic()
    c.expect("421 4.4.2")
    assert c.closed()
    assert 0.25 <= time.monotonic() - started < 3


def test_idle_timeout_also_applies_inside_data(make_server, raw):
    s = make_server(idle_timeout=0.3)
    c = raw(server=s)
    begin(c)
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: slow\r\n\r\nhalf a message")
    c.expect("421 4.4.2")
    assert c.closed() and s.messages == []


def test_max_connections_per_client_address(make_server, raw):
    s = make_server(max_connections_per_ip=2)
    a, b = raw(server=s), raw(server=s)
    third = raw(server=s, greet=False)
    third.expect("421 4.7.0")
    assert third.closed()
    a.cmd("QUIT", "221 2.0.0")
    assert a.closed()
    wait_for(lambda: len(s.server.sessions) == 1, what="the first session to end")
    fourth = raw(server=s)
    fourth.cmd("NOOP", "250 2.0.0")
    b.cmd("NOOP", "250 2.0.0")


def test_the_per_client_cap_counts_every_listener_together(make_server, raw, client_tls):
    s = make_server(max_connections_per_ip=2)
    mx, submission = raw("mx", server=s), raw("submission", server=s)
    for listener in ("mx", "submission", "smtps"):
        third = raw(listener, server=s, greet=False)
        if listener == "smtps":
            third.sock = client_tls.wrap_socket(third.sock, server_hostname="mx.example.test")
        third.expect("421 4.7.0")
        assert third.closed()
    mx.cmd("NOOP", "250 2.0.0")
    submission.cmd("NOOP", "250 2.0.0")


def test_at_the_total_cap_the_oldest_idle_session_makes_room_else_421(make_server, raw):
    """A session that has not authenticated and waits between transactions is evicted for a new one,
    oldest first; one inside a transaction never is; when none can go, the new one is refused."""
    s = make_server(max_connections=2, max_connections_per_ip=10)
    idle, busy = raw(server=s), raw(server=s)
    begin(busy)
    third = raw(server=s)  # greeted with 220: the idle one made room
    idle.expect("421 4.3.2")
    assert idle.closed()
    begin(third)
    fourth = raw(server=s, greet=False)
    fourth.expect("421 4.3.2")
    assert fourth.closed()
    busy.cmd("RSET", "250 2.0.0")
    third.cmd("NOOP", "250 2.0.0")


def test_max_errors_per_session_then_421(make_server, raw):
    s = make_server(max_errors=3)
    c = raw(server=s)
    c.cmd("BOGUS", "500 5.5.1")
    c.cmd("BOGUS", "500 5.5.1")
    c.send("BOGUS")
    c.expect("500 5.5.1")
    c.expect("421 4.7.0")
    assert c.closed()


def test_sessions_do_not_leak_into_each_other(raw, srv):
    a, b = raw(), raw()
    begin(a, "alice@example.test")
    b.cmd("EHLO other.example.test", "250 ")
    b.cmd("RCPT TO:<bob@example.test>", "503 5.5.1")  # b has no MAIL of its own
    b.cmd("DATA", "503 5.5.1")
    a.cmd("DATA", "354 ")
    a.send_raw(b"Subject: a\r\n\r\nfrom a\r\n.\r\n")
    a.expect("250 2.0.0")
    assert [r.address for r in srv.messages[0][0].rcpt_to] == ["alice@example.test"]


def test_client_vanishing_mid_data_leaves_nothing(raw, srv):
    c = raw()
    begin(c)
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: cut\r\n\r\npartial")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    wait_for(lambda: not srv.server.sessions, what="the session to end")
    assert srv.messages == []
    fresh = raw()
    fresh.cmd("NOOP", "250 2.0.0")
