"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 7677, RFC 5802, channel binding RFC 5929) in IMAP AUTHENTICATE
(RFC 4959 SASL-IR too) and POP3 AUTH (RFC 5034), against the real store, with scramp as the client
(tests/support/scram.py): in clear text on loopback and over TLS with tls-server-end-point (and
tls-unique on TLS 1.2); wrong passwords fail and are throttled; a user from before SCRAM (no verifier)
fails, logs in with PLAIN, and then SCRAM works."""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import shutil
import ssl
import subprocess

import pytest
from imaptest import Raw, Running, client_tls, settings_for

from tests.support.scram import Client, b64, end_point, unique


def imaps(srv) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls(), timeout=10)


def tls12() -> ssl.SSLContext:
    ctx = client_tls()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# --- IMAP ------------------------------------------------------------------------------------------------


def test_imap_advertises_plus_only_over_tls(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    assert "AUTH=SCRAM-SHA-256" in m.capabilities and "AUTH=SCRAM-SHA-256-PLUS" not in m.capabilities
    m.logout()
    m = imaps(srv)
    assert {"AUTH=PLAIN", "AUTH=SCRAM-SHA-256", "AUTH=SCRAM-SHA-256-PLUS"} <= set(m.capabilities)
    m.logout()


def test_imap_scram_in_clear_text_with_imaplib(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    typ, data = m.authenticate("SCRAM-SHA-256", Client("alice@example.test", "alice-pw").authobject())
    assert typ == "OK" and m.state == "AUTH"  # the client checked the server's signature on the way
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_imap_scram_plus_tls_server_end_point(srv):
    m = imaps(srv)
    client = Client("alice@example.test", "alice-pw", end_point(m.sock))
    assert m.authenticate("SCRAM-SHA-256-PLUS", client.authobject())[0] == "OK"
    m.logout()


def test_imap_scram_plus_tls_unique_on_tls12(srv):
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=tls12(), timeout=10)
    assert m.sock.version() == "TLSv1.2"
    assert m.authenticate("SCRAM-SHA-256-PLUS", Client("alice@example.test", "alice-pw", unique(m.sock)).authobject())[0] == "OK"
    m.logout()


def test_imap_sasl_ir_transcript(srv):
    c = Raw("127.0.0.1", srv.port("imaps"), context=client_tls())
    c.line()
    client = Client("alice@example.test", "alice-pw", end_point(c.sock))
    c.send(f"a1 AUTHENTICATE SCRAM-SHA-256-PLUS {client.first()}")
    server_first = c.line()
    assert server_first.startswith(b"+ ")
    c.send(client.final(server_first[2:]))
    server_final = c.line()
    assert base64.b64decode(server_final[2:]).startswith(b"v=")
    client.check(server_final[2:])
    c.send("")
    assert c.until("a1")[-1].startswith(b"a1 OK [CAPABILITY ")
    assert c.cmd("a2", "SELECT INBOX")[-1].startswith(b"a2 OK")


def test_imap_unsupported_binding_type_and_downgrade(srv):
    c = Raw("127.0.0.1", srv.port("imaps"), context=client_tls())  # TLS 1.3: no tls-unique
    c.line()
    first = b64("p=tls-unique,,n=alice@example.test,r=abcdefgh")
    reply = c.cmd("a1", f"AUTHENTICATE SCRAM-SHA-256-PLUS {first}")[-1]
    assert reply.startswith(b"a1 BAD Invalid SCRAM message: e=unsupported-channel-binding-type")
    # "y": the client could bind but believes we cannot; we advertised -PLUS, so someone removed it
    reply = c.cmd("a2", f"AUTHENTICATE SCRAM-SHA-256 {b64('y,,n=alice@example.test,r=abcdefgh')}")[-1]
    assert reply.startswith(b"a2 BAD Invalid SCRAM message: e=server-does-support-channel-binding")
    # in clear text "y" is right, and the login goes through
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    client = Client("alice@example.test", "alice-pw", ("tls-server-end-point", b""), plus=False)
    first = client.first()
    assert base64.b64decode(first).startswith(b"y,,")
    c.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {first}")
    c.send(client.final(c.line()[2:]))
    client.check(c.line()[2:])
    c.send("")
    assert c.until("a1")[-1].startswith(b"a1 OK")


def test_imap_binding_of_another_connection_fails(srv):
    other = Raw("127.0.0.1", srv.port("imaps"), context=tls12())
    c = Raw("127.0.0.1", srv.port("imaps"), context=tls12())
    c.line()
    client = Client("alice@example.test", "alice-pw", unique(other.sock))  # a man in the middle's
    c.send(f"a1 AUTHENTICATE SCRAM-SHA-256-PLUS {client.first()}")
    c.send(client.final(c.line()[2:]))
    reply = c.until("a1")[-1]
    assert reply.startswith(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed (SCRAM e=channel-bindings-dont-match)")


def test_imap_wrong_password_fails_and_is_throttled(tmp_path, store):
    srv = Running(settings_for(tmp_path, login_failures_free=0, login_failures_max=2), store)
    try:
        for _ in range(2):
            m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
            with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED.*e=invalid-proof"):
                m.authenticate("SCRAM-SHA-256", Client("alice@example.test", "wrong").authobject())
            m.logout()
        assert srv.server.ctx.auth.throttle.failures("127.0.0.1") == 2
        c = Raw("127.0.0.1", srv.port("imap"))
        c.line()
        client = Client("alice@example.test", "alice-pw")  # even the right password, without asking the store
        assert c.cmd("a1", f"AUTHENTICATE SCRAM-SHA-256 {client.first()}")[-1].startswith(b"a1 NO [UNAVAILABLE]")
    finally:
        srv.stop()


def test_imap_unknown_user_looks_like_a_wrong_password(srv):
    replies = []
    for user in ("nobody@example.test", "alice@example.test"):
        c = Raw("127.0.0.1", srv.port("imap"))
        c.line()
        client = Client(user, "wrong")
        c.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {client.first()}")
        server_first = base64.b64decode(c.line()[2:]).decode()
        again = Raw("127.0.0.1", srv.port("imap"))  # the same salt on every attempt, user or not
        again.line()
        again.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {Client(user, 'x').first()}")
        assert base64.b64decode(again.line()[2:]).decode().split(",")[1:] == server_first.split(",")[1:]
        assert ",i=4096" in server_first
        c.send(client.final(base64.b64encode(server_first.encode())))
        replies.append(c.until("a1")[-1])
    assert replies[0] == replies[1]


def test_imap_user_from_before_scram_logs_in_with_plain_first(srv, store):
    store.drop_scram_verifier("alice@example.test")
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.authenticate("SCRAM-SHA-256", Client("alice@example.test", "alice-pw").authobject())
    assert m.login("alice@example.test", "alice-pw")[0] == "OK"  # the store learns the verifier
    m.logout()
    assert store.scram_verifier("alice@example.test").startswith("SCRAM-SHA-256$4096:")
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    assert m.authenticate("SCRAM-SHA-256", Client("alice@example.test", "alice-pw").authobject())[0] == "OK"
    m.logout()


def test_imap_hostile_responses(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a1", "AUTHENTICATE SCRAM-SHA-256 !!!!")[-1].startswith(b"a1 BAD")
    other = b64("n,bob@example.test,n=alice@example.test,r=abc")  # not a=: bad syntax
    assert c.cmd("a2", f"AUTHENTICATE SCRAM-SHA-256 {other}")[-1].startswith(b"a2 BAD")
    authzid = b64("n,a=bob@example.test,n=alice@example.test,r=abc")  # acting as another user
    assert c.cmd("a3", f"AUTHENTICATE SCRAM-SHA-256 {authzid}")[-1].startswith(b"a3 NO [AUTHENTICATIONFAILED]")
    c.send("a4 AUTHENTICATE SCRAM-SHA-256")
    assert c.line() == b"+ "
    c.send("*")
    assert c.until("a4")[-1] == b"a4 BAD Authentication cancelled"
    client = Client("alice@example.test", "alice-pw")
    c.send(f"a5 AUTHENTICATE SCRAM-SHA-256 {client.first()}")
    c.line()
    c.send(b64("c=biws,r=forged-nonce,p=" + base64.b64encode(b"x" * 32).decode()))
    assert c.until("a5")[-1].startswith(b"a5 NO [AUTHENTICATIONFAILED] Authentication failed (SCRAM e=other-error)")
    c.send(f"a6 AUTHENTICATE SCRAM-SHA-256 {b64('n,,n=alice@example.test,r=' + 'x' * 5000)}")
    assert c.until("a6")[-1].startswith(b"a6 BAD")


# --- POP3 ------------------------------------------------------------------------------------------------


def multiline(c: Raw) -> list[bytes]:
    lines = [c.line()]
    while lines[-1] != b".":
        lines.append(c.line())
    return lines


def pop3_scram(c: Raw, client: Client, initial: bool = True) -> bytes:
    if initial:
        c.send(f"AUTH {client.mechanism} {client.first()}")
    else:
        c.send(f"AUTH {client.mechanism}")
        assert c.line() == b"+ "
        c.send(client.first())
    server_first = c.line()
    assert server_first.startswith(b"+ "), server_first
    c.send(client.final(server_first[2:]))
    reply = c.line()
    if reply.startswith(b"+ "):
        client.check(reply[2:])
        c.send("")
        reply = c.line()
    return reply


def test_pop3_capa_and_scram_in_clear_text(srv):
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("CAPA")
    caps = multiline(c)
    assert b"SASL PLAIN SCRAM-SHA-256" in caps
    c.send("AUTH")
    assert multiline(c)[1:] == [b"PLAIN", b"SCRAM-SHA-256", b"."]
    assert pop3_scram(c, Client("alice@example.test", "alice-pw"), initial=False).startswith(b"+OK")
    c.send("STAT")
    assert c.line() == b"+OK 0 0"


def test_pop3s_scram_plus(srv):
    c = Raw("127.0.0.1", srv.port("pop3s"), context=client_tls())
    c.line()
    c.send("CAPA")
    assert b"SASL PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in multiline(c)
    assert pop3_scram(c, Client("alice@example.test", "alice-pw", end_point(c.sock))).startswith(b"+OK")


def test_pop3_wrong_password_and_no_verifier(srv, store):
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    reply = pop3_scram(c, Client("alice@example.test", "wrong"))
    assert reply == b"-ERR [AUTH] Authentication failed (SCRAM e=invalid-proof)"
    assert srv.server.ctx.auth.throttle.failures("127.0.0.1") == 1
    store.drop_scram_verifier("bob@example.test")
    assert pop3_scram(c, Client("bob@example.test", "bob-pw")).startswith(b"-ERR [AUTH]")
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    p.user("bob@example.test")
    assert p.pass_("bob-pw").startswith(b"+OK")
    p.quit()
    assert pop3_scram(c, Client("bob@example.test", "bob-pw")).startswith(b"+OK")


def test_plus_after_starttls_and_stls(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    assert "AUTH=SCRAM-SHA-256-PLUS" not in m.capabilities
    m.starttls(client_tls())
    assert "AUTH=SCRAM-SHA-256-PLUS" in m.capabilities  # imaplib asked again after the switch
    client = Client("alice@example.test", "alice-pw", end_point(m.sock))
    assert m.authenticate("SCRAM-SHA-256-PLUS", client.authobject())[0] == "OK"
    m.logout()
    c = Raw("127.0.0.1", srv.port("pop3"))
    c.line()
    c.send("STLS")
    assert c.line().startswith(b"+OK")
    c.sock = client_tls().wrap_socket(c.sock)
    c.send("CAPA")
    assert b"SASL PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in multiline(c)
    assert pop3_scram(c, Client("alice@example.test", "alice-pw", end_point(c.sock)), initial=False).startswith(b"+OK")


@pytest.mark.skipif(not shutil.which("mbsync"), reason="needs Debian's isync (mbsync, over Cyrus SASL)")
def test_mbsync_logs_in_with_scram(srv, tmp_path):
    """A real client's SCRAM (Cyrus SASL's, which has no -PLUS), over IMAPS where -PLUS is offered too;
    it lists the folders once logged in."""
    mechanism = "SCRAM-SHA-256"
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount a\nHost localhost\nPort {srv.port('imaps')}\nUser alice@example.test\nPass alice-pw\n"
        f"SSLType IMAPS\nCertificateFile {srv.settings.tls_cert}\nAuthMechs {mechanism}\n\n"
        f"IMAPStore remote\nAccount a\n\nMaildirStore local\nPath {tmp_path}/mail/\nInbox {tmp_path}/mail/INBOX\n\n"
        "Channel ch\nFar :remote:\nNear :local:\nPatterns *\n"
    )
    (tmp_path / "mail").mkdir()
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(
        ["mbsync", "-c", str(rc), "-V", "-l", "ch"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0 and "INBOX" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"Authenticating with SASL mechanism {mechanism}" in proc.stdout + proc.stderr
