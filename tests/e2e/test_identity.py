"""Issue 12 items 3 and 6 through the whole stack (six processes, nats-server, a DNS server that knows
no domain at all, so a wrong "remote" verdict ends in "domain does not exist" at once):

- one unauthenticated message from a quoted local part with a space, bounced (too big for the
  recipient's quota), must not make the local domain look remote to delivery (its failure DSN goes to
  that odd address; a success DSN would go only to an authenticated sender: no backscatter);
- `mailflow user passwd` and `mailflow user disable` take effect at once on SMTP AUTH (new logins and an
  authenticated session's next MAIL FROM), IMAP (an IDLE session ends) and POP3; a disabled user still
  receives mail and reads it after `mailflow user enable`.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import time

import pytest

from mailflow.stack import Ports, Stack
from tests.e2e.course import message, states, unverified
from tests.support import wait_for
from tests.support.dns import DnsServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with DnsServer("") as dns:
        env = {
            "MAILFLOW_RESOLVER_NAMESERVERS": dns.address,
            "MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.2",
            "MAILFLOW_SMTP_AUTH_RECHECK_INTERVAL": "0",  # every MAIL FROM asks: no second to wait out
        }
        st = Stack(tmp_path_factory.mktemp("stack"), Ports.free(), env=env).start()
        try:
            st.cli("domain", "add", "example.test")
            st.cli("domain", "add", "other.test")
            for user in ("alice", "bob", "carol"):
                st.cli("user", "add", f"{user}@example.test", "--password", f"{user}-pw")
            st.cli("user", "add", "dave@other.test", "--password", "dave-pw")
            yield st
        finally:
            st.stop()


def smtp_session(st: Stack, user: str, password: str) -> smtplib.SMTP:
    s = smtplib.SMTP(st.ports.host, st.ports.submission, timeout=30)
    s.ehlo("laptop.test")
    s.starttls(context=unverified())
    s.ehlo("laptop.test")
    s.login(user, password)
    return s


def smtp_auth_refused(st: Stack, user: str, password: str) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        smtp_session(st, user, password).quit()
    assert e.value.smtp_code == 535


def idle(st: Stack, user: str, password: str) -> tuple[socket.socket, object]:
    """An IMAP session IDLE in INBOX: (socket, its reader)."""
    sock = socket.create_connection((st.ports.host, st.ports.imap), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    for line in (f"a LOGIN {user} {password}", "b SELECT INBOX", "c IDLE"):
        sock.sendall(line.encode() + b"\r\n")
        while not (got := f.readline()).startswith((line[:2].encode(), b"+ ")):
            pass
        assert not got.startswith((b"a NO", b"b NO")), got
    return sock, f


def ends_within_a_second(session: tuple[socket.socket, object], since: float) -> None:
    sock, f = session
    sock.settimeout(max(0.05, since + 1.0 - time.monotonic()))
    lines = []
    while line := f.readline():
        lines.append(line)
    assert any(x.startswith(b"* BYE") for x in lines), lines
    assert time.monotonic() - since < 1.0
    sock.close()


def imap_refused(st: Stack, user: str, password: str) -> None:
    with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30) as m, pytest.raises(imaplib.IMAP4.error):
        m.login(user, password)


def pop3_refused(st: Stack, user: str, password: str) -> None:
    p = poplib.POP3(st.ports.host, st.ports.pop3, timeout=30)
    p.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_(password)
    p.close()


def inbox_subjects(st: Stack, user: str, password: str) -> list[bytes]:
    with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30) as m:
        m.login(user, password)
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [d[1].strip() for d in data if isinstance(d, tuple)]


def test_an_odd_sender_getting_a_dsn_does_not_make_the_domain_remote(stack):
    """The failure DSN goes to '"john doe"@other.test', the first address in other.test delivery sees.
    Asked about that address, the store used to say "not local"; delivery kept that for the domain, and
    dave@other.test's next message bounced: "domain other.test does not exist"."""
    odd = '"john doe"@other.test'  # the store cannot take this local part; the domain is still ours
    stack.cli("user", "add", "erin@example.test", "--password", "erin-pw", "--quota", "100")
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        assert s.mail(odd)[0] == 250
        assert s.rcpt("erin@example.test")[0] == 250
        assert s.data(message("erin@example.test", "first", sender=odd))[0] == 250  # larger than her quota
    log = stack.data_dir / "logs" / "delivery.log"
    # delivery has routed the failure DSN to the odd address (and cached its verdict on other.test)
    wait_for(lambda: f"rcpt={odd}" in log.read_text(errors="replace"), timeout=30, what="the DSN routed")
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.mail("someone@elsewhere.test")
        s.rcpt("dave@other.test")
        code, text = s.data(message("dave@other.test", "second"))
    assert code == 250
    qid = text.decode().rsplit(" ", 1)[-1]

    def outcome() -> str | None:
        state = states(stack, qid).get("dave@other.test")
        return state if state in ("delivered", "bounced") else None

    assert wait_for(outcome, timeout=30, what="dave's outcome") == "delivered"  # not "domain does not exist"
    assert b"Subject: second" in inbox_subjects(stack, "dave@other.test", "dave-pw")


def test_password_change_takes_effect_at_once_on_smtp_imap_and_pop3(stack):
    user = "alice@example.test"
    session = smtp_session(stack, user, "alice-pw")
    assert session.mail(user)[0] == 250
    session.rset()
    waiting = idle(stack, user, "alice-pw")

    stack.cli("user", "passwd", user, "--password", "alice-new")
    t0 = time.monotonic()
    ends_within_a_second(waiting, t0)
    code, text = session.mail(user)  # the authenticated session sends no more
    assert (code, text[:5]) == (530, b"5.7.0")
    session.close()
    smtp_auth_refused(stack, user, "alice-pw")
    imap_refused(stack, user, "alice-pw")
    pop3_refused(stack, user, "alice-pw")
    with smtp_session(stack, user, "alice-new") as s:
        assert s.mail(user)[0] == 250


def test_disable_takes_effect_at_once_and_mail_still_arrives(stack):
    user = "bob@example.test"
    session = smtp_session(stack, user, "bob-pw")
    waiting = idle(stack, user, "bob-pw")

    assert "disabled" in stack.cli("user", "disable", user).stdout
    ends_within_a_second(waiting, time.monotonic())
    assert session.mail(user)[0] == 530
    session.close()
    smtp_auth_refused(stack, user, "bob-pw")
    imap_refused(stack, user, "bob-pw")
    pop3_refused(stack, user, "bob-pw")
    with smtp_session(stack, "carol@example.test", "carol-pw") as s:
        s.sendmail("carol@example.test", [user], message(user, "while disabled", sender="carol@example.test"))

    assert "enabled" in stack.cli("user", "enable", user).stdout
    got = wait_for(lambda: inbox_subjects(stack, user, "bob-pw"), timeout=30, what="bob's mail")
    assert got == [b"Subject: while disabled"]
