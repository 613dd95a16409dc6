"""Submission (RFC 6409, STARTTLS before AUTH) and implicit TLS (RFC 8314): AUTH PLAIN/LOGIN, sender
ownership, Message-ID/Date added, TLS in the Received: header, failed-AUTH throttling."""

from __future__ import annotations

import base64
import smtplib
import ssl

import pytest


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tls_raw(c, client_tls):
    """STARTTLS on a Raw client: wrap its socket, EHLO again."""
    c.cmd("STARTTLS", "220 2.0.0")
    c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
    return c


def test_submission_needs_tls_before_auth_and_auth_before_mail(raw):
    c = raw("submission")
    ehlo = c.cmd("EHLO laptop.example.test", "250 ")
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo  # no AUTH offered in clear text
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "538 5.7.11")
    c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")


def test_starttls_then_auth_plain_and_send_anywhere(srv, client_tls):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as s:
        s.ehlo("laptop.example.test")
        s.starttls(context=client_tls)
        s.ehlo("laptop.example.test")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        code, _ = s.mail("alice@example.test")
        assert code == 530  # authentication required
        s.rset()
        s.login("alice@example.test", "alice-pw")
        refused = s.sendmail(
            "alice@example.test",
            ["friend@elsewhere.test", "bob@example.test"],
            b"Subject: hi\r\n\r\nfrom alice\r\n",
        )
        assert refused == {}
    ((msg, raw_bytes),) = srv.messages
    assert [r.address for r in msg.rcpt_to] == ["friend@elsewhere.test", "bob@example.test"]
    assert msg.client.auth_user == "alice@example.test" and msg.client.listener == "submission"
    assert msg.client.tls and msg.client.tls.startswith("TLSv1.")
    assert b" with ESMTPSA id " in raw_bytes and b"(version=TLSv1." in raw_bytes


def test_auth_login_with_and_without_initial_response(raw, client_tls):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
    c.cmd(b64("alice@example.test"), "334 UGFzc3dvcmQ6")
    c.cmd(b64("alice-pw"), "235 2.7.0")
    c.cmd("AUTH LOGIN", "503 5.5.1")  # once is enough
    d = tls_raw(raw("submission"), client_tls)
    d.cmd("EHLO laptop.example.test", "250 ")
    d.cmd("AUTH LOGIN " + b64("bob@example.test"), "334 UGFzc3dvcmQ6")
    d.cmd(b64("bob-pw"), "235 2.7.0")


def test_auth_plain_dialogue_cancel_and_garbage(raw, client_tls):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN", "334 ")
    c.cmd("*", "501 5.7.0")
    c.cmd("AUTH PLAIN !!!notbase64", "501 5.5.2")
    c.cmd("AUTH PLAIN " + b64("no-nuls-here"), "501 5.5.2")
    c.cmd("AUTH CRAM-MD5", "504 5.5.4")
    c.cmd(
        "AUTH PLAIN " + b64("bob@example.test\0alice@example.test\0alice-pw"), "535 5.7.8"
    )  # acting as another
    c.cmd("AUTH PLAIN", "334 ")
    c.cmd(b64("\0alice@example.test\0alice-pw"), "235 2.7.0")


def test_auth_is_not_offered_on_the_mx_listener(raw, client_tls):
    c = tls_raw(raw("mx"), client_tls)
    assert "AUTH" not in c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "502 5.5.1")


def test_wrong_password_535_and_421_after_three(raw, client_tls):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0wrong"), "535 5.7.8")
    c.cmd("AUTH PLAIN " + b64("\0nobody@example.test\0x"), "535 5.7.8")
    c.send("AUTH PLAIN " + b64("\0alice@example.test\0wrong2"))
    c.expect("535 5.7.8")
    c.expect("421 4.7.0")
    assert c.closed()


def test_failed_auth_is_throttled_per_client_address(make_server, raw, client_tls):
    s = make_server(auth_failures_per_ip=2)
    for _ in range(2):
        c = tls_raw(raw("submission", server=s), client_tls)
        c.cmd("EHLO laptop.example.test", "250 ")
        c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0guess"), "535 5.7.8")
    c = tls_raw(raw("submission", server=s), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "454 4.7.0")  # even the right one, for now


def test_directory_down_during_auth_is_454(make_server, raw, client_tls, directory):
    directory.down = True
    s = make_server()
    c = tls_raw(raw("submission", server=s), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "454 4.7.0")


def test_a_revoked_login_sends_no_more_mail(make_server, raw, client_tls, directory, store):
    """Issue 12 item 6: the password changed (or the user was disabled or deleted) after AUTH: the
    next MAIL FROM asks the store, gets 530, and the session must authenticate again."""
    s = make_server(auth_recheck_interval=0)
    c = tls_raw(raw("submission", server=s), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "235 2.7.0")
    c.cmd("MAIL FROM:<alice@example.test>", "250 2.1.0")
    c.cmd("RSET", "250 ")
    directory.down = True  # can't check is not revoked
    c.cmd("MAIL FROM:<alice@example.test>", "451 4.4.3")
    directory.down = False
    store.set_password("alice@example.test", "new-pw")
    c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")
    c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")  # no longer authenticated
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "535 5.7.8")  # the old password
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0new-pw"), "235 2.7.0")


def test_a_fresh_login_is_not_asked_about_again(make_server, raw, client_tls, directory):
    """Within auth_recheck_interval (1 s by default) of AUTH or of the last check, MAIL costs no store call."""
    s = make_server(auth_recheck_interval=3600)
    c = tls_raw(raw("submission", server=s), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "235 2.7.0")
    directory.down = True  # not asked: the login is a moment old
    c.cmd("MAIL FROM:<alice@example.test>", "250 2.1.0")


@pytest.mark.parametrize(
    "sender,ok",
    [
        ("alice@example.test", True),
        ("Alice@Example.Test", True),
        ("alice+lists@example.test", True),  # subaddress of her own
        ("sales@example.test", True),  # her alias
        ("", True),  # null sender (e.g. an MDN)
        ("bob@example.test", False),
        ("alice@elsewhere.test", False),
        ("bob+alice@example.test", False),
    ],
)
def test_sender_must_be_owned(raw, client_tls, sender, ok):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH PLAIN " + b64("\0alice@example.test\0alice-pw"), "235 2.7.0")
    c.cmd(f"MAIL FROM:<{sender}>", "250 2.1.0" if ok else "553 5.7.1")


def test_message_id_and_date_added_on_submission_only(srv, client_tls):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as s:
        s.starttls(context=client_tls)
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["bob@example.test"], b"Subject: bare\r\n\r\nno id, no date\r\n")
        s.sendmail(
            "alice@example.test",
            ["bob@example.test"],
            b"Subject: full\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <mine@laptop>\r\n\r\nkept\r\n",
        )
    with smtplib.SMTP("127.0.0.1", srv.port("mx"), timeout=10) as s:
        s.sendmail("carol@elsewhere.test", ["bob@example.test"], b"Subject: inbound\r\n\r\nleft alone\r\n")
    (_, bare), (_, full), (_, inbound) = srv.messages
    head = bare.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nSubject: bare\r\nMessage-ID: <" in head and b"@mx.example.test>\r\nDate: " in head
    assert full.count(b"Message-ID:") == 1 and b"<mine@laptop>" in full and full.count(b"Date:") == 1
    assert b"Message-ID" not in inbound and b"\r\nDate:" not in inbound


def test_implicit_tls_smtps(srv, client_tls):
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("smtps"), timeout=10, context=client_tls) as s:
        code, _ = s.ehlo("laptop.example.test")
        assert code == 250 and "starttls" not in s.esmtp_features
        s.login("bob@example.test", "bob-pw")
        s.sendmail("bob@example.test", ["friend@elsewhere.test"], b"Subject: s\r\n\r\nover 465\r\n")
    ((msg, raw_bytes),) = srv.messages
    assert msg.client.listener == "smtps" and msg.client.auth_user == "bob@example.test"
    assert b" with ESMTPSA id " in raw_bytes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(srv):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with smtplib.SMTP_SSL("127.0.0.1", srv.port("smtps"), timeout=10, context=ctx) as s:
            s.noop()


@pytest.mark.parametrize("listener", ["mx", "submission"])
def test_starttls_discards_plaintext_sent_after_it(raw, client_tls, listener):
    """CVE-2011-0411 class: commands pipelined after STARTTLS in clear must not run inside TLS."""
    c = raw(listener)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.send_raw(b"STARTTLS\r\nNOOP\r\nRSET\r\n")
    c.expect("220 2.0.0")
    c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
    c.send("EHLO laptop.example.test")
    first = c.reply()
    assert first.startswith("250-mx.example.test"), first  # not the answer to NOOP
    c.cmd("STARTTLS", "503 5.5.1")
    c.cmd("RSET", "250 2.0.0")


def test_starttls_forgets_the_earlier_ehlo(raw, client_tls):
    c = tls_raw(raw("mx"), client_tls)
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")
