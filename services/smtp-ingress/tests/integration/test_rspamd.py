"""Spam filtering with a real rspamd (tests/support/rspamd.py): what each of its actions does to a
message at the end of DATA, and what happens when rspamd is down, slow or not asked."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from mailflow_smtp_ingress import metrics

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject: str, body: bytes = b"Shall we meet for lunch on Thursday at noon?") -> bytes:
    return (
        b"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\n"
        b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" + subject.replace(" ", ".").encode()
        + b"@elsewhere.test>\r\nDate: Mon, 07 Dec 2026 05:00:00 +0000\r\n\r\n" + body + b"\r\n"
    )  # fmt: skip


def send(c, data: bytes, expect: str) -> str:
    c.cmd("EHLO client.elsewhere.test", "250 ")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send_raw(data + b".\r\n")
    return c.expect(expect)


def count(result: str) -> float:
    return metrics.RSPAMD_CHECKS.labels(result)._value.get()


@pytest.fixture
def scanned(make_server, rspamd):
    return make_server(rspamd_url=rspamd.url)


def test_gtube_is_rejected_and_not_queued(scanned, raw):
    reply = send(raw(server=scanned), message("gtube", GTUBE), "550 5.7.1")
    assert reply == "550 5.7.1 Message rejected as spam"
    assert scanned.messages == []


def test_a_clean_message_is_queued_as_it_came(scanned, raw):
    send(raw(server=scanned), message("lunch"), "250 2.0.0")
    ((msg, data),) = scanned.messages
    assert not msg.junk
    assert b"X-Spam" not in data and data.endswith(message("lunch"))


def test_add_header_goes_to_junk_with_x_spam_and_rspamds_headers(scanned, raw):
    forged = message("MAILFLOW-TEST-JUNK offer").replace(
        b"Subject:", b"X-Spam: No\r\nX-Spamd-Result: default: False [-10 / 15]\r\nSubject:"
    )
    send(raw(server=scanned), forged, "250 2.0.0")
    ((msg, data),) = scanned.messages
    assert msg.junk
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"X-Spam: ") == 1 and b"\r\nX-Spam: Yes\r\n" in head  # the sender's own is gone
    assert head.count(b"X-Spamd-Result: ") == 1 and b"MAILFLOW_TEST_JUNK(8.00)" in head
    assert data.startswith(b"Received: ")


def test_an_smtputf8_envelope_is_scanned(scanned, raw):
    c = raw(server=scanned)
    c.cmd("EHLO client.elsewhere.test", "250 ")
    c.cmd("MAIL FROM:<josé@elsewhere.test> SMTPUTF8", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send_raw(message("gtube from josé", GTUBE) + b".\r\n")
    c.expect("550 5.7.1")


def test_rewrite_subject_goes_to_junk_too_with_the_subject_as_sent(scanned, raw):
    send(raw(server=scanned), message("MAILFLOW-TEST-SUBJECT prize"), "250 2.0.0")
    ((msg, data),) = scanned.messages
    assert msg.junk and b"\r\nX-Spam: Yes\r\n" in data
    assert b"\r\nSubject: MAILFLOW-TEST-SUBJECT prize\r\n" in data  # Junk is the mark; the text is the sender's


def test_greylist_is_a_451_and_not_queued(scanned, raw):
    reply = send(raw(server=scanned), message("MAILFLOW-TEST-LATER hello"), "451 4.7.1")
    assert reply == "451 4.7.1 Message deferred by the spam filter, try again later"
    assert scanned.messages == []


def test_rspamd_down_accepts_unscanned_by_default(make_server, raw):
    srv = make_server(rspamd_url=f"http://127.0.0.1:{closed_port()}")
    before = count("unavailable")
    send(raw(server=srv), message("gtube while down", GTUBE), "250 2.0.0")
    ((msg, data),) = srv.messages
    assert not msg.junk and b"X-Spam" not in data
    assert count("unavailable") == before + 1


def test_rspamd_down_defers_when_not_fail_open(make_server, raw):
    srv = make_server(rspamd_url=f"http://127.0.0.1:{closed_port()}", rspamd_fail_open=False)
    assert send(raw(server=srv), message("lunch"), "451 4.7.1") == "451 4.7.1 Spam filter unavailable, try again later"
    assert srv.messages == []


def test_rspamd_that_never_answers_times_out_then_fails_open(make_server, raw):
    with silent_server() as port:
        srv = make_server(rspamd_url=f"http://127.0.0.1:{port}", rspamd_timeout=0.5)
        send(raw(server=srv), message("gtube while slow", GTUBE), "250 2.0.0")
    assert len(srv.messages) == 1


def test_rspamd_that_dribbles_its_answer_times_out_too(make_server, raw):
    with silent_server(drip=True) as port:
        srv = make_server(rspamd_url=f"http://127.0.0.1:{port}", rspamd_timeout=0.5, rspamd_fail_open=False)
        send(raw(server=srv), message("lunch"), "451 4.7.1")
    assert srv.messages == []


def test_an_error_status_is_unavailable_too(make_server, raw, rspamd):
    srv = make_server(rspamd_url=rspamd.url + "/no-such-path", rspamd_fail_open=False)
    send(raw(server=srv), message("lunch"), "451 4.7.1")
    assert srv.messages == []


def test_a_message_over_the_size_limit_is_not_scanned(make_server, raw, rspamd):
    srv = make_server(rspamd_url=rspamd.url, rspamd_max_bytes=100)
    before = count("too_big")
    send(raw(server=srv), message("gtube but big", GTUBE), "250 2.0.0")
    assert len(srv.messages) == 1 and count("too_big") == before + 1


def submit(port: int, client_tls, data: bytes):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("laptop.example.test")
        s.starttls(context=client_tls)
        s.ehlo("laptop.example.test")
        s.login("alice@example.test", "alice-pw")
        return s.sendmail("alice@example.test", ["friend@elsewhere.test"], data)


def test_submission_is_not_scanned_unless_asked(make_server, rspamd, client_tls):
    srv = make_server(rspamd_url=rspamd.url)
    assert submit(srv.port("submission"), client_tls, message("gtube from alice", GTUBE)) == {}
    on = make_server(rspamd_url=rspamd.url, rspamd_submission=True)
    with pytest.raises(smtplib.SMTPDataError) as e:
        submit(on.port("submission"), client_tls, message("gtube from alice again", GTUBE))
    assert e.value.smtp_code == 550
    junk = message("MAILFLOW-TEST-JUNK from alice")
    assert submit(on.port("submission"), client_tls, junk) == {}
    ((msg, data),) = on.messages
    assert not msg.junk and b"\r\nX-Spam: Yes\r\n" in data  # marked, but no Junk: the recipient is elsewhere


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class silent_server:
    """A TCP server that accepts connections and never answers (rspamd stuck), or with `drip` answers
    200 and then a byte of its body now and then, never finishing."""

    def __init__(self, drip: bool = False):
        self.drip = drip
        self.stop = threading.Event()

    def __enter__(self) -> int:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.drip:
                threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
            while not self.stop.wait(0.05):
                conn.sendall(b" ")
        except OSError:
            return

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()
