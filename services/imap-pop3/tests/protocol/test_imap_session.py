"""IMAP sessions from the first byte: greeting, CAPABILITY, LOGIN, AUTHENTICATE PLAIN (SASL-IR too),
STARTTLS, implicit TLS, LOGINDISABLED off loopback, states, throttling, ID/ENABLE/NAMESPACE, LOGOUT."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import io
import logging

import pytest
from imaptest import Raw, Running, client_tls, settings_for

from mailflow import log as mlog
from mailflow.proxy_protocol import encode_v2


def login(srv, user="alice@example.test", pw="alice-pw") -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login(user, pw)
    return m


def test_greeting_capability_login_logout(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    greeting = c.line()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"STARTTLS" in greeting
    lines = c.cmd("a1", "CAPABILITY")
    assert lines[0].startswith(b"* CAPABILITY IMAP4rev1") and b"AUTH=PLAIN" in lines[0]
    assert b"LOGINDISABLED" not in lines[0]  # loopback may log in without TLS
    assert lines[-1] == b"a1 OK CAPABILITY completed"
    lines = c.cmd("a2", "LOGIN alice@example.test alice-pw")
    assert (
        lines[-1].startswith(b"a2 OK [CAPABILITY IMAP4rev1")
        and b"UIDPLUS" in lines[-1]
        and b"MOVE" in lines[-1]
    )
    lines = c.cmd("a3", "LOGOUT")
    assert lines == [b"* BYE Logging out", b"a3 OK LOGOUT completed"]
    assert c.closed()


def test_wrong_password_unknown_user_same_answer(srv):
    for user, pw in [("alice@example.test", "nope"), ("nobody@example.test", "alice-pw")]:
        c = Raw("127.0.0.1", srv.port("imap"))
        c.line()
        assert c.cmd("a1", f"LOGIN {user} {pw}")[-1] == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"
        c.close()


def test_states_are_strict(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a1", "SELECT INBOX")[-1] == b"a1 NO [CLIENTBUG] SELECT not allowed now: log in first"
    assert c.cmd("a2", "FETCH 1 FLAGS")[-1].startswith(b"a2 NO [CLIENTBUG]")
    c.cmd("a3", "LOGIN alice@example.test alice-pw")
    assert c.cmd("a4", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a4 NO [CLIENTBUG]")
    assert c.cmd("a5", "FETCH 1 FLAGS")[-1] == b"a5 NO [CLIENTBUG] FETCH not allowed now: no mailbox selected"
    assert c.cmd("a6", "STARTTLS")[-1].startswith(b"a6 NO [CLIENTBUG]")
    assert c.cmd("a7", "FROB")[-1] == b"a7 BAD Unknown command FROB"
    assert c.cmd("a8", "SELECT")[-1].startswith(b"a8 BAD Syntax error")
    c.cmd("a9", "SELECT INBOX")
    assert c.cmd("b1", "ENABLE CONDSTORE")[-1].startswith(
        b"b1 NO [CLIENTBUG]"
    )  # RFC 5161: authenticated only


def test_authenticate_plain_with_and_without_initial_response(srv):
    token = base64.b64encode(b"\x00alice@example.test\x00alice-pw").decode()
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a1", f"AUTHENTICATE PLAIN {token}")[-1].startswith(b"a1 OK [CAPABILITY")
    c.close()
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a1 AUTHENTICATE PLAIN")
    assert c.line() == b"+ "
    c.send(token)
    assert c.until("a1")[-1].startswith(b"a1 OK")
    c.close()
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a1 AUTHENTICATE PLAIN")
    c.line()
    c.send("*")
    assert c.until("a1")[-1] == b"a1 BAD Authentication cancelled"
    assert c.cmd("a2", "AUTHENTICATE CRAM-MD5")[-1].startswith(b"a2 NO [CANNOT]")
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.authenticate("PLAIN", lambda _: b"\x00bob@example.test\x00bob-pw")
    assert m.state == "AUTH"
    m.logout()


def test_starttls_then_login(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.starttls(client_tls())
    assert "STARTTLS" not in m.capabilities
    m.login("alice@example.test", "alice-pw")
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_starttls_drops_pipelined_plaintext(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send_raw(b"a1 STARTTLS\r\na2 LOGIN alice@example.test alice-pw\r\n")
    assert c.line() == b"a1 OK Begin TLS negotiation now"
    # the injected LOGIN was discarded: nothing else arrives in the clear, the handshake works
    sock = client_tls().wrap_socket(c.sock)
    sock.sendall(b"a3 CAPABILITY\r\n")
    data = b""
    while b"a3 OK" not in data:
        data += sock.recv(4096)
    assert b"a2" not in data


def test_implicit_tls(srv):
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls())
    assert "STARTTLS" not in m.capabilities
    m.login("alice@example.test", "alice-pw")
    m.logout()


@pytest.fixture
def proxied(tmp_path, store):
    running = Running(
        settings_for(tmp_path, proxy_protocol=True, proxy_trusted="127.0.0.0/8", login_failures_free=1, login_failures_max=3),
        store,
    )
    yield running
    running.stop()


def from_internet(srv, ip="192.0.2.7", name="imap") -> Raw:
    c = Raw("127.0.0.1", srv.port(name))
    c.send_raw(encode_v2((ip, 40000), ("198.51.100.1", 143)))
    return c


def test_logindisabled_without_tls_off_loopback(proxied):
    c = from_internet(proxied)
    greeting = c.line()
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    assert c.cmd("a1", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a1 NO [PRIVACYREQUIRED]")
    assert c.cmd("a2", "AUTHENTICATE PLAIN AGFAYgBj")[-1].startswith(b"a2 NO [PRIVACYREQUIRED]")
    assert c.cmd("a3", "STARTTLS")[-1] == b"a3 OK Begin TLS negotiation now"
    sock = client_tls().wrap_socket(c.sock)
    sock.sendall(b"a4 LOGIN alice@example.test alice-pw\r\n")
    data = b""
    while b"a4 " not in data:
        data += sock.recv(4096)
    assert b"a4 OK" in data


def test_login_throttled_per_client_address(proxied):
    for _ in range(3):
        c = from_internet(proxied, "192.0.2.66", "imaps")
        sock = client_tls().wrap_socket(c.sock)
        c.sock = sock
        c.line()
        assert b"AUTHENTICATIONFAILED" in c.cmd("a1", "LOGIN alice@example.test wrong")[-1]
        c.close()
    c = from_internet(proxied, "192.0.2.66", "imaps")
    c.sock = client_tls().wrap_socket(c.sock)
    c.line()
    # even the right password is refused now, without asking the store
    assert c.cmd("a1", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a1 NO [UNAVAILABLE] Too many")
    c = from_internet(proxied, "192.0.2.67", "imaps")
    c.sock = client_tls().wrap_socket(c.sock)
    c.line()
    assert c.cmd("a1", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a1 OK")


def test_untrusted_or_missing_proxy_header_is_closed(proxied):
    c = Raw("127.0.0.1", proxied.port("imap"))
    c.send("a1 CAPABILITY")  # no PROXY header
    assert c.closed() and c.buf == b""


def test_id_enable_namespace(srv):
    m = login(srv)
    typ, data = m.xatom("ID", '("name" "pytest")')
    assert typ == "OK" and m.untagged_responses["ID"][0].startswith(b'("name" "Mailflow"')
    typ, data = m._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK" and m.untagged_responses["ENABLED"] == [b"CONDSTORE"]
    typ, data = m.namespace()
    assert data == [b'(("" "/")) NIL NIL']
    m.logout()


def test_too_many_bad_commands_close_the_connection(tmp_path, store):
    running = Running(settings_for(tmp_path, max_bad_commands=3), store)
    try:
        c = Raw("127.0.0.1", running.port("imap"))
        c.line()
        for i in range(2):
            assert c.cmd(f"a{i}", "BLAH")[-1].startswith(f"a{i} BAD".encode())
        c.send("a9 BLAH")
        assert c.line() == b"a9 BAD Unknown command BLAH"
        assert c.line() == b"* BYE Too many invalid commands"
        assert c.closed()
    finally:
        running.stop()


def test_autologout_before_login(tmp_path, store):
    running = Running(settings_for(tmp_path, preauth_timeout=0.3), store)
    try:
        c = Raw("127.0.0.1", running.port("imap"))
        c.line()
        assert c.line() == b"* BYE Autologout; idle for too long"
        assert c.closed()
    finally:
        running.stop()


def test_junk_gets_bad_never_a_fault_or_a_dropped_connection(srv):
    import random

    rng = random.Random(7)
    words = [b"FETCH", b"UID", b"1:*", b"(", b")", b"BODY[", b"]", b'"', b"{3}", b"\\Seen", b"*", b"%", b"INBOX",
             b"SEARCH", b"OR", b"NOT", b"STORE", b"+FLAGS", b"LIST", b"\x00", b"\xff", b"<1.2>", b"APPEND"]  # fmt: skip
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    c.cmd("a1", "SELECT INBOX")
    for n in range(150):
        line = b" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))).replace(b"{3}", b"")
        tag = b"j%d" % n
        c.send_raw(tag + b" " + line + b"\r\n")
        reply = c.until(tag.decode())[-1]
        assert reply.split()[1] in (b"OK", b"NO", b"BAD"), reply
        assert b"SERVERBUG" not in reply and b"Internal" not in reply, (line, reply)
        c.cmd(f"k{n}", "NOOP")  # a BAD budget of 20 in a row is never reached this way
    assert c.cmd("z", "NOOP")[-1] == b"z OK NOOP completed"


@contextlib.contextmanager
def log_lines(fmt: logging.Formatter):
    """What the service logs meanwhile, as the production handler writes it."""
    out = io.StringIO()
    handler = mlog.BatchedHandler(out, delay=0)
    handler.setFormatter(fmt)
    handler.addFilter(mlog._ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("fmt", [mlog.TextFormatter(), mlog.JsonFormatter()], ids=["text", "json"])
def test_a_login_name_with_crlf_cannot_forge_a_log_line(srv, fmt):
    forged = b"mallory\r\n12:00:00.000 I imap-pop3 mailflow_imap_pop3.imap.session: login  [user=admin@example.test]"
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    with log_lines(fmt) as out:
        c.send(b"a1 LOGIN {%d}" % len(forged))
        assert c.line().startswith(b"+")
        c.send(forged + b" wrong-pw")
        assert c.until("a1")[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        c.cmd("a2", "LOGOUT")
    lines = out.getvalue().splitlines()
    failed = [ln for ln in lines if "login failed" in ln]
    assert len(failed) == 1 and "mallory" in failed[0]
    assert not any(ln.startswith("12:00:00.000") for ln in lines)


# --- input before authentication is small (issue 12.5) --------------------------------------------------


def test_a_large_append_before_login_is_refused_before_it_is_read(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a1 APPEND INBOX {52428800}")  # 50 MB: the limit after login, not before
    assert c.line() == b"a1 BAD [TOOBIG] Literal too big (the limit is 8192 octets)"
    c.send("a2 LOGIN {9000}")
    assert c.line() == b"a2 BAD [TOOBIG] Literal too big (the limit is 8192 octets)"
    c.send(b"a3 APPEND INBOX {5+}\r\nhello")  # small enough to read, then refused by state
    assert c.line() == b"a3 NO [CLIENTBUG] APPEND not allowed now: log in first"
    assert c.cmd("a4", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a4 OK")
    c.send("a5 APPEND INBOX {52428800}")  # logged in: the APPEND limit holds
    assert c.line().startswith(b"+ ")


def test_a_large_literal_plus_before_login_closes_the_connection(srv):
    """RFC 7888 §4: the client sends a LITERAL+ literal anyway, so refusing it means closing."""
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a1 APPEND INBOX {52428800+}")
    assert c.line() == b"a1 BAD [TOOBIG] Literal too big"
    assert c.line().startswith(b"* BYE")
    assert c.closed()


def test_a_long_line_before_login_is_refused(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a1 LOGIN " + "x" * 9000 + " y")
    assert c.line() == b"a1 BAD Command line too long"
    assert c.cmd("a2", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a2 OK")
    assert c.cmd("a3", "SELECT " + "x" * 9000)[-1].startswith(b"a3 NO ")  # read whole: 64 KiB after login


def test_too_many_literals_in_one_command_is_a_limit_not_a_size(srv):
    """More than framing.MAX_LITERALS literals (64) in one command: BAD [LIMIT], not [TOOBIG] (the
    literals are one octet each); with LITERAL+ the client sends them anyway, so the connection ends."""
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    c.send("a1 APPEND INBOX " + "{1+}\r\nx " * 64 + "{1+}")
    assert c.line() == b"a1 BAD [LIMIT] More than 64 literals in one command"
    assert c.line().startswith(b"* BYE")
    assert c.closed()
