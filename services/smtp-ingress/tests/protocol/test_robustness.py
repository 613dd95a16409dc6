"""No input crashes the service or leaks into another session: random bytes, random command soup,
and a whole transcript fed one byte at a time (every chunk boundary, incl. inside <CRLF>.<CRLF>)."""

from __future__ import annotations

import smtplib
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow_smtp_ingress import metrics

WORDS = [
    b"EHLO x",
    b"HELO x",
    b"MAIL FROM:<a@b.test>",
    b"MAIL FROM:<>",
    b"RCPT TO:<alice@example.test>",
    b"RCPT TO:<x@elsewhere.test>",
    b"DATA",
    b"BDAT 5",
    b"BDAT 0 LAST",
    b"BDAT 99999999",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"STARTTLS",
    b"VRFY a",
    b".",
    b"..",
    b"*",
    b"=",
    b"\x00",
    b'MAIL FROM:<"a\\"b"@c.test> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x+41',
    b"RCPT TO:<alice@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+40y",
]
ENDS = [b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n.\n", b"\r\n.\r\n"]

soup = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(WORDS), st.sampled_from(ENDS)).map(lambda t: t[0] + t[1]),
        st.binary(max_size=64),
    ),
    max_size=40,
).map(b"".join)


def internal_errors() -> float:
    return metrics.INTERNAL_ERRORS._value.get()


def still_works(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("after.example.test")
        assert s.sendmail("a@b.test", ["alice@example.test"], b"Subject: ok\r\n\r\nstill here\r\n") == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(soup, st.binary(max_size=2048)))
def test_random_input_never_breaks_the_server(srv, data):
    before = internal_errors()
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as sock:
        sock.recv(1024)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
    assert internal_errors() == before


def test_after_the_soup_a_normal_session_works(srv):
    for blob in (b"\xff" * 5000 + b"\r\n", b"BDAT 3\r\n\r\n\r\n", b"DATA\r\n" * 50, b"\r\n.\r\n" * 100):
        with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as sock:
            sock.sendall(blob)
    still_works(srv.port())


def test_transcript_fed_byte_by_byte(srv):
    transcript = (
        b"EHLO slow.example.test\r\nMAIL FROM:<carol@elsewhere.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\nSubject: slow\r\n\r\n..dot\r\nline\r\n.\r\n"
        b"MAIL FROM:<carol@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 12 LAST\r\nSubject: b\r\n"
        b"QUIT\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(transcript)):
            sock.sendall(transcript[i : i + 1])
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    codes = [line[:3] for line in got.split(b"\r\n") if line and line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"250", b"221"]
    (m1, r1), (m2, r2) = srv.messages
    assert r1.endswith(b"Subject: slow\r\n\r\n.dot\r\nline\r\n") and r2.endswith(b"Subject: b\r\n")


def test_a_client_that_half_closes_still_gets_its_replies(srv):
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=10) as sock:
        sock.sendall(
            b"EHLO half.example.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"Subject: half\r\n\r\nclosed my side\r\n.\r\nQUIT\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert b"250 2.0.0 Ok: queued as" in got and got.endswith(b"221 2.0.0 Bye\r\n")
    assert len(srv.messages) == 1


def test_an_unexpected_error_in_a_command_is_451_with_a_ref_and_the_session_goes_on(srv, raw, monkeypatch):
    """replies.to_reply is where every failure of a handler becomes a reply: unclassified is temporary,
    the client sees a ref and no detail, the metric counts it, and the next command works."""
    from mailflow_smtp_ingress import parser

    def broken(text: str) -> str:
        raise KeyError("secret-host.internal:5432")

    monkeypatch.setattr(parser, "sanitize_helo", broken)
    before = internal_errors()
    c = raw()
    reply = c.cmd("EHLO client.example.test", "451 4.3.0")
    assert "ref " in reply and "secret" not in reply and "KeyError" not in reply
    assert internal_errors() == before + 1
    c.cmd("NOOP", "250 2.0.0")
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")  # the failed EHLO did not count


def test_an_unexpected_error_inside_a_message_closes_the_connection(srv, raw, monkeypatch):
    """While message octets are read (State.DATA) the rest of the stream cannot be told from commands:
    after an internal error there the session says 421 and closes; nothing is queued."""
    from mailflow_smtp_ingress import parser

    def broken(data: bytes, max_line: int):
        raise RuntimeError("bug")

    monkeypatch.setattr(parser, "check_text", broken)
    c = raw()
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    reply = c.expect("421 4.3.0")
    assert "ref " in reply and "closing connection" in reply
    assert c.closed() and srv.messages == []
