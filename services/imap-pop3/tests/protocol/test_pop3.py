"""POP3 (RFC 1939, 2449, 2595, 5034): the whole command set with poplib and by hand, states and -ERR,
byte-stuffing, the maildrop lock, UIDL stable across sessions, deletions only at QUIT, STLS, POP3S."""

from __future__ import annotations

import asyncio
import base64
import poplib
import socket
import threading

import pytest
from imaptest import Raw, Running, client_tls, make_message, settings_for

from mailflow.proxy_protocol import encode_v2
from tests.support import wait_for
from tests.support.store import TestStore

DOTTY = b"From: a@x.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"


def pop(srv, user="alice@example.test", pw="alice-pw") -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    p.user(user)
    p.pass_(pw)
    return p


def fill(srv, n, user="alice@example.test"):
    msgs = [make_message(f"m{i}", body=f"line {i}\n" * 5) for i in range(n)]
    for m in msgs:
        srv.deliver(user, m)
    return msgs


def test_stat_list_retr_top_uidl(srv):
    msgs = fill(srv, 3)
    p = pop(srv)
    assert p.stat() == (3, sum(len(m) for m in msgs))
    resp, listing, _ = p.list()
    assert listing == [b"%d %d" % (i + 1, len(m)) for i, m in enumerate(msgs)]
    assert p.list(2).decode() == f"+OK 2 {len(msgs[1])}"
    resp, lines, octets = p.retr(2)
    assert resp.startswith(b"+OK") and b"\r\n".join(lines) + b"\r\n" == msgs[1]
    resp, lines, _ = p.top(1, 2)
    assert lines[-3:] == [b"", b"line 0", b"line 0"]
    resp, uidl, _ = p.uidl()
    assert [u.split()[0] for u in uidl] == [b"1", b"2", b"3"]
    assert p.uidl(3).split()[2] == uidl[2].split()[1]
    p.quit()
    p = pop(srv)
    assert p.uidl()[1] == uidl  # stable across sessions
    p.quit()


def test_byte_stuffing_round_trip(srv):
    srv.deliver("alice@example.test", DOTTY)
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("USER alice@example.test")
    c.line()
    c.send("PASS alice-pw")
    c.line()
    c.send("RETR 1")
    assert c.line().startswith(b"+OK %d octets" % len(DOTTY))
    body = []
    while (line := c.line()) != b".":
        body.append(line)
    assert body == [
        b"From: a@x.test",
        b"Subject: dots",
        b"",
        b"..leading dot",
        b"...two dots",
        b"..",
        b"last",
    ]
    p = pop(srv, "bob@example.test", "bob-pw")
    p.quit()


def test_deletions_happen_only_at_quit_and_rset_undoes(srv):
    fill(srv, 3)
    p = pop(srv)
    p.dele(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        p.retr(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        p.dele(1)
    assert p.stat()[0] == 2
    p.rset()
    assert p.stat()[0] == 3
    p.dele(2)
    p.sock.shutdown(socket.SHUT_RDWR)  # connection lost without QUIT: nothing is deleted
    p.close()
    wait_for(lambda: not srv.store.pop3_locked("alice@example.test"), what="lock released")
    p = pop(srv)
    assert p.stat()[0] == 3
    p.dele(2)
    p.dele(3)
    assert p.quit().startswith(b"+OK Bye, 2 messages deleted")
    p = pop(srv)
    assert p.stat()[0] == 1
    p.quit()


def test_maildrop_lock(srv):
    fill(srv, 1)
    first = pop(srv)
    second = poplib.POP3("127.0.0.1", srv.port("pop3"))
    second.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("alice-pw")
    first.quit()
    second.user("alice@example.test")
    assert second.pass_("alice-pw").startswith(b"+OK")
    second.quit()


def test_states_and_arguments_get_err(srv):
    fill(srv, 1)
    c = Raw("127.0.0.1", srv.port("pop3"))
    assert c.line() == b"+OK Mailflow POP3 ready"
    for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"):
        c.send(cmd)
        assert c.line() == b"-ERR Command not valid in this state", cmd
    c.send("PASS x")
    assert c.line() == b"-ERR Send USER first"
    c.send("FROB")
    assert c.line() == b"-ERR Unknown command"
    c.send("USER alice@example.test")
    c.line()
    c.send("PASS wrong")
    assert c.line() == b"-ERR [AUTH] Authentication failed"
    c.send("USER alice@example.test")
    c.line()
    c.send("PASS alice-pw")
    assert c.line().startswith(b"+OK")
    for cmd, reply in [
        ("USER x", b"-ERR Command not valid in this state"),
        ("RETR", b"-ERR Invalid arguments"),
        ("RETR x", b"-ERR Invalid arguments"),
        ("RETR 2", b"-ERR No such message"),
        ("RETR 0", b"-ERR No such message"),
        ("TOP 1", b"-ERR Invalid arguments"),
        ("LIST 9", b"-ERR No such message"),
        ("STAT 1", b"-ERR Invalid arguments"),
        ("STLS", b"-ERR Command not valid in this state"),
    ]:
        c.send(cmd)
        assert c.line() == reply, cmd
    c.send("A" * 300)
    assert c.line() == b"-ERR Line too long"
    c.send("QUIT")
    assert c.line().startswith(b"+OK")
    assert c.closed()


def test_capa_pipelining_and_auth_plain(srv):
    fill(srv, 2)
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("CAPA")
    capa = []
    while (line := c.line()) != b".":
        capa.append(line)
    assert capa[0].startswith(b"+OK") and {
        b"TOP",
        b"UIDL",
        b"USER",
        b"SASL PLAIN SCRAM-SHA-256",
        b"STLS",
        b"PIPELINING",
    } <= set(capa)
    token = base64.b64encode(b"\x00alice@example.test\x00alice-pw")
    c.send_raw(b"AUTH PLAIN " + token + b"\r\nSTAT\r\nNOOP\r\nQUIT\r\n")  # pipelined
    assert c.line().startswith(b"+OK Logged in")
    assert c.line().startswith(b"+OK 2 ")
    assert c.line() == b"+OK"
    assert c.line().startswith(b"+OK Bye")
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("AUTH PLAIN")
    assert c.line() == b"+ "
    c.send(token.decode())
    assert c.line().startswith(b"+OK Logged in")
    c.close()


def test_stls_and_pop3s(srv):
    fill(srv, 1)
    p = poplib.POP3("127.0.0.1", srv.port("pop3"))
    p.stls(client_tls())
    assert "STLS" not in p.capa()
    p.user("alice@example.test")
    p.pass_("alice-pw")
    assert p.stat()[0] == 1
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=client_tls())
    p.user("alice@example.test")
    p.pass_("alice-pw")
    assert p.stat()[0] == 1
    p.quit()


def test_plaintext_refused_off_loopback_without_tls(tmp_path, store):
    running = Running(settings_for(tmp_path, proxy_protocol=True, proxy_trusted="127.0.0.0/8"), store)
    try:
        c = Raw("127.0.0.1", running.port("pop3"))
        c.send_raw(encode_v2(("203.0.113.9", 1234), ("198.51.100.1", 110)))
        c.line()
        c.send("CAPA")
        capa = []
        while (line := c.line()) != b".":
            capa.append(line)
        assert b"USER" not in capa and b"STLS" in capa
        c.send("USER alice@example.test")
        assert c.line().startswith(b"-ERR [AUTH] Plaintext authentication disallowed")
    finally:
        running.stop()


def test_retr_reads_ahead_in_batches(srv):
    msgs = fill(srv, 40)
    calls = []
    original = srv.store.fetch_bodies

    async def counting(p, mailbox_id, uids):
        calls.append(len(uids))
        return await original(p, mailbox_id, uids)

    srv.store.fetch_bodies = counting
    p = pop(srv)
    for i in range(1, 41):
        assert b"\r\n".join(p.retr(i)[1]) + b"\r\n" == msgs[i - 1]
    p.quit()
    assert len(calls) == 1 and calls[0] == 40


def test_an_expired_store_session_ends_the_pop3_session(srv):
    fill(srv, 1)
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    p.user("alice@example.test")
    p.pass_("alice-pw")
    srv.store.expire_sessions()
    p._putcmd("RETR 1")
    assert p._getline()[0] == b"-ERR [SYS/TEMP] Session expired, please log in again"
    with pytest.raises(poplib.error_proto, match="EOF"):  # and closed
        p._getline()


def test_every_poplib_command(srv):
    msgs = fill(srv, 2)
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    assert {"TOP", "UIDL", "USER", "STLS"} <= set(p.capa())
    p.stls(client_tls())
    p.user("alice@example.test")
    p.pass_("alice-pw")
    assert p.noop() == b"+OK"
    assert p.stat() == (2, sum(map(len, msgs)))
    assert len(p.list()[1]) == 2 and len(p.uidl()[1]) == 2
    assert p.top(1, 0)[1][-1] == b""
    assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == msgs[0]
    p.dele(1)
    p.rset()
    p.dele(2)
    assert p.quit().startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        poplib.POP3("127.0.0.1", srv.port("pop3")).apop("alice@example.test", "alice-pw")


# --- input limits (issue 12.5) -------------------------------------------------------------------------


class HeldLogins(TestStore):
    """authenticate() waits until the test lets it go: a PASS that takes as long as the test needs."""

    def __init__(self, local) -> None:
        super().__init__(local)
        self.release = threading.Event()

    async def authenticate(self, *args, **kw):
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
        return await super().authenticate(*args, **kw)


@pytest.fixture
def held(tmp_path, store):
    store = HeldLogins(store.local)
    running = Running(settings_for(tmp_path), store)
    yield running, store
    store.release.set()
    running.stop()


def flood(c: Raw, chunk: bytes, limit: int = 64 << 20) -> int:
    """Send `chunk` until the server stops taking it (3 s without progress) or `limit` octets went."""
    c.sock.settimeout(3)
    sent = 0
    try:
        while sent < limit:
            c.sock.sendall(chunk)
            sent += len(chunk)
    except TimeoutError:
        pass
    return sent


def buffered(srv) -> int:
    async def biggest() -> int:
        return max(len(s.buf) for s in srv.server.ctx.sessions)

    return srv.call(biggest())


def pass_held(srv) -> Raw:
    """A session whose PASS the store holds: nothing it sends meanwhile is answered."""
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("USER alice@example.test")
    c.line()
    c.send("PASS alice-pw")
    return c


def test_input_while_pass_is_pending_is_bounded_and_an_endless_line_is_cut_off(held):
    srv, store = held
    c = pass_held(srv)
    sent = flood(c, b"x" * (1 << 20))  # no line end at all: 400 MiB went in 1.5 s here before
    assert sent < 32 << 20  # what the kernel buffers hold; the server stopped reading
    assert buffered(srv) <= srv.settings.pop3_max_pipelined_bytes + (1 << 20)
    store.release.set()
    c.sock.settimeout(10)
    assert c.line().startswith(b"+OK Logged in")
    assert c.line() == b"-ERR Line too long"
    assert c.closed()


def test_pipelined_commands_while_pass_is_pending_pause_reading(held):
    srv, _ = held
    c = pass_held(srv)
    sent = flood(c, b"NOOP\r\n" * 100_000)
    assert sent < 32 << 20
    assert buffered(srv) <= srv.settings.pop3_max_pipelined_bytes + (1 << 20)


def test_a_line_without_end_past_the_limit_is_answered_and_closed(srv):
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send_raw(b"NOOP " + b"x" * 300)  # RFC 2449 §4: 255 octets with the CRLF
    assert c.line() == b"-ERR Line too long"
    assert c.closed()


def test_stls_drops_commands_pipelined_in_the_clear(srv):
    """RFC 2595 §4: USER/PASS sent in the clear right behind STLS must not log in inside TLS."""
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send_raw(b"STLS\r\nUSER alice@example.test\r\nPASS alice-pw\r\n")
    assert c.line() == b"+OK Begin TLS negotiation"
    c.sock = client_tls().wrap_socket(c.sock)
    c.send("STAT")
    assert c.line() == b"-ERR Command not valid in this state"
