"""SMTP AUTH SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 4954, RFC 7677, channel binding RFC 5929) on the
submission listeners against the real store, with scramp as the client (tests/support/scram.py): the
server-final message is a 334 challenge answered by an empty line, then 235 (RFC 4954 §4)."""

from __future__ import annotations

import base64
import smtplib

import pytest

from tests.support.scram import Client, b64, end_point


def tls_raw(c, client_tls):
    c.cmd("STARTTLS", "220 2.0.0")
    c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
    return c


def scram(c, client: Client) -> str:
    """The exchange with an initial response; the final reply."""
    c.send(f"AUTH {client.mechanism} {client.first()}")
    server_first = c.reply()
    assert server_first.startswith("334 "), server_first
    c.send(client.final(server_first[4:]))
    reply = c.reply()
    if reply.startswith("334 "):
        client.check(reply[4:])
        c.send("")
        reply = c.reply()
    return reply


def test_ehlo_offers_plus_only_inside_tls(raw, client_tls, make_server):
    c = tls_raw(raw("submission"), client_tls)
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in c.cmd("EHLO laptop.example.test", "250 ")
    clear = make_server(require_tls_for_auth=False)
    c = raw("submission", server=clear)
    ehlo = c.cmd("EHLO laptop.example.test", "250 ")
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in ehlo and "SCRAM-SHA-256-PLUS" not in ehlo
    c.cmd("AUTH SCRAM-SHA-256-PLUS " + b64("p=tls-server-end-point,,n=alice@example.test,r=abc"), "504 5.5.4")
    assert scram(c, Client("alice@example.test", "alice-pw")).startswith("235 2.7.0")


def test_smtplib_starttls_scram_plus_then_send(srv, client_tls):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as s:
        s.ehlo("laptop.example.test")
        s.starttls(context=client_tls)
        s.ehlo("laptop.example.test")
        assert "SCRAM-SHA-256-PLUS" in s.esmtp_features["auth"]
        client = Client("alice@example.test", "alice-pw", end_point(s.sock))
        code, _ = s.auth("SCRAM-SHA-256-PLUS", client.authobject())
        assert code == 235
        assert s.mail("alice@example.test")[0] == 250


def test_smtps_transcript_with_the_server_final_as_334(raw, client_tls):
    c = raw("smtps", greet=False)
    c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
    c.expect("220 ")
    c.cmd("EHLO laptop.example.test", "250 ")
    client = Client("alice@example.test", "alice-pw", end_point(c.sock))
    c.send(f"AUTH SCRAM-SHA-256-PLUS {client.first()}")
    server_first = c.expect("334 ")
    assert base64.b64decode(server_first[4:]).startswith(b"r=")
    c.send(client.final(server_first[4:]))
    server_final = c.expect("334 ")
    client.check(server_final[4:])  # the server proved it holds the verifier
    c.cmd("", "235 2.7.0")
    c.cmd("MAIL FROM:<alice@example.test>", "250 2.1.0")


def test_scram_without_initial_response_and_cancel(raw, client_tls):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH SCRAM-SHA-256", "334 ")
    c.cmd("*", "501 5.7.0")
    c.cmd("AUTH SCRAM-SHA-256 " + b64("x,,n=alice@example.test,r=abc"), "501 5.5.2")
    reply = c.cmd("AUTH SCRAM-SHA-256 " + b64("y,,n=alice@example.test,r=abc"), "501 5.5.2")
    assert "e=server-does-support-channel-binding" in reply  # -PLUS was offered: a downgrade
    reply = c.cmd("AUTH SCRAM-SHA-256-PLUS " + b64("p=tls-unique,,n=alice@example.test,r=abc"), "501")
    assert "e=unsupported-channel-binding-type" in reply  # TLS 1.3 has no tls-unique
    client = Client("alice@example.test", "alice-pw")
    c.send("AUTH SCRAM-SHA-256")
    c.expect("334 ")
    c.send(client.first())
    c.send(client.final(c.expect("334 ")[4:]))
    client.check(c.expect("334 ")[4:])
    c.cmd("", "235 2.7.0")


def test_wrong_password_authzid_and_421_after_three(raw, client_tls):
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    reply = scram(c, Client("alice@example.test", "wrong"))
    assert reply == "535 5.7.8 Authentication credentials invalid (SCRAM e=invalid-proof)"
    c.cmd("AUTH SCRAM-SHA-256 " + b64("n,a=bob@example.test,n=alice@example.test,r=abc"), "535 5.7.8")
    c.send("AUTH SCRAM-SHA-256 " + Client("nobody@example.test", "x").first())
    c.expect("334 ")
    c.send(Client("nobody@example.test", "x").first())  # not a client-final message: a failure too
    c.expect("535 5.7.8 Authentication credentials invalid (SCRAM e=invalid-encoding)")
    c.expect("421 4.7.0")  # the third failure in the session


@pytest.mark.parametrize("listener", ["submission"])
def test_failures_count_in_the_throttle(make_server, raw, client_tls, listener):
    server = make_server(auth_failures_per_ip=2)
    for _ in range(2):
        c = tls_raw(raw(listener, server=server), client_tls)
        c.cmd("EHLO laptop.example.test", "250 ")
        assert scram(c, Client("alice@example.test", "wrong")).startswith("535 5.7.8")
    c = tls_raw(raw(listener, server=server), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    c.cmd("AUTH SCRAM-SHA-256 " + Client("alice@example.test", "alice-pw").first(), "454 4.7.0")


def test_user_from_before_scram_logs_in_with_plain_first(raw, client_tls, store):
    store.drop_scram_verifier("bob@example.test")
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    assert scram(c, Client("bob@example.test", "bob-pw")).startswith("535 5.7.8")
    c.cmd("AUTH PLAIN " + b64("\0bob@example.test\0bob-pw"), "235 2.7.0")
    assert store.scram_verifier("bob@example.test").startswith("SCRAM-SHA-256$4096:")
    c = tls_raw(raw("submission"), client_tls)
    c.cmd("EHLO laptop.example.test", "250 ")
    assert scram(c, Client("bob@example.test", "bob-pw")).startswith("235 2.7.0")
