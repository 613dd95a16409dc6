"""RFC 8689 REQUIRETLS on receipt: offered only inside TLS, the MAIL FROM parameter refused outside it
(530 5.7.10) and with a value (501), and a message given it is queued marked so (QueuedMessage.requiretls),
on submission and on the MX listener alike."""

from __future__ import annotations

import smtplib


def test_offered_only_over_tls_and_the_message_is_marked(srv, client_tls):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as s:
        s.ehlo("laptop.example.test")
        assert "requiretls" not in s.esmtp_features
        s.starttls(context=client_tls)
        s.ehlo("laptop.example.test")
        assert "requiretls" in s.esmtp_features
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["friend@elsewhere.test"], b"Subject: secret\r\n\r\nonly over TLS\r\n", mail_options=["REQUIRETLS"])
        s.sendmail("alice@example.test", ["friend@elsewhere.test"], b"Subject: plain\r\n\r\nas usual\r\n")
    (marked, _), (plain, _) = srv.messages
    assert marked.requiretls is True and plain.requiretls is False


def test_from_another_mta_over_starttls(srv, client_tls):
    with smtplib.SMTP("127.0.0.1", srv.port("mx"), timeout=10) as s:
        s.starttls(context=client_tls)
        s.ehlo("mx.elsewhere.test")
        assert "requiretls" in s.esmtp_features
        s.sendmail("carol@elsewhere.test", ["bob@example.test"], b"Subject: in\r\n\r\nsecret\r\n", mail_options=["REQUIRETLS"])
    ((msg, _),) = srv.messages
    assert msg.requiretls is True


def test_refused_outside_tls_and_with_a_value(raw):
    c = raw("mx")
    c.cmd("EHLO mx.elsewhere.test", "250")
    c.cmd("MAIL FROM:<carol@elsewhere.test> REQUIRETLS", "530 5.7.10")
    c.cmd("MAIL FROM:<carol@elsewhere.test> REQUIRETLS=YES", "501")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250")  # the session goes on
    c.close()


def test_helo_sessions_cannot_give_it(raw):
    c = raw("mx")
    c.cmd("HELO mx.elsewhere.test", "250")
    c.cmd("MAIL FROM:<carol@elsewhere.test> REQUIRETLS", "555 5.5.4")
    c.close()
