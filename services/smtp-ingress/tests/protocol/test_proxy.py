"""PROXY protocol v2 (and v1) in front of the listeners: the address in the header is the client's,
for the Received: header, the per-address connection limit and the AUTH throttle. Only a peer inside
PROXY_TRUSTED may send one (mailflow.proxy_protocol); none configured means nobody, and then PROXY on
does not start."""

from __future__ import annotations

import base64

import pytest

from mailflow.proxy_protocol import encode_v1, encode_v2

LOOPBACK = "127.0.0.0/8"  # the tests' "load balancer" is this machine


def v2_header(
    src: str, sport: int = 40000, dst: str = "192.0.2.10", dport: int = 25, local: bool = False
) -> bytes:
    return encode_v2(None if local else (src, sport), (dst if ":" not in src else "2001:db8::1", dport))


def proxied(make_server, **overrides):
    return make_server(proxy_protocol=True, proxy_trusted=LOOPBACK, **overrides)


def test_v2_address_goes_into_received_and_envelope(make_server, raw):
    s = proxied(make_server)
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("203.0.113.7", 51000))
    c.expect("220 ")
    c.cmd("EHLO client.example.test", "250 ")
    c.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    c.cmd("RCPT TO:<user@elsewhere.test>", "550 5.7.1")  # still no relay
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: via balancer\r\n\r\nx\r\n.\r\n")
    c.expect("250 2.0.0")
    ((msg, raw_bytes),) = s.messages
    assert msg.client.ip == "203.0.113.7" and msg.client.port == 51000
    assert raw_bytes.startswith(b"Received: from client.example.test ([203.0.113.7])")


def test_v2_ipv6_and_v1(make_server, raw):
    s = proxied(make_server)
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("2001:db8::5"))
    c.expect("220 ")
    c.cmd("EHLO client.example.test", "250 ")
    d = raw(server=s, greet=False)
    d.send_raw(b"PROXY TCP4 198.51.100.9 192.0.2.10 40001 25\r\n")
    d.expect("220 ")
    d.cmd("HELO v1.example.test", "250 ")
    ips = sorted(x.client.ip for x in s.server.sessions)
    assert ips == ["198.51.100.9", "2001:db8::5"]


def test_per_address_limit_counts_the_real_client(make_server, raw):
    s = proxied(make_server, max_connections_per_ip=1)
    a = raw(server=s, greet=False)
    a.send_raw(v2_header("203.0.113.1"))
    a.expect("220 ")
    b = raw(server=s, greet=False)  # same balancer, another client: fine
    b.send_raw(v2_header("203.0.113.2"))
    b.expect("220 ")
    again = raw(server=s, greet=False)  # the first client twice: refused
    again.send_raw(v2_header("203.0.113.1"))
    again.expect("421 4.7.0")


def test_auth_throttle_counts_the_real_client(make_server, raw, client_tls):
    s = proxied(make_server, auth_failures_per_ip=1)
    plain = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    good = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()

    def session(src: str):
        c = raw("submission", server=s, greet=False)
        c.send_raw(v2_header(src, dport=587))
        c.expect("220 ")
        c.cmd("STARTTLS", "220 2.0.0")
        c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
        c.cmd("EHLO laptop.example.test", "250 ")
        return c

    session("203.0.113.1").cmd("AUTH PLAIN " + plain, "535 5.7.8")
    session("203.0.113.1").cmd("AUTH PLAIN " + good, "454 4.7.0")  # this client is throttled
    session("203.0.113.2").cmd(
        "AUTH PLAIN " + good, "235 2.7.0"
    )  # another one behind the same balancer is not


def test_auth_throttle_counts_an_ipv6_client_by_its_64(make_server, raw, client_tls):
    """The one login throttle (mailflow.throttle, as imap-pop3's): a client is an IPv6 /64, so a host
    cannot step around the limit by changing addresses inside its own /64."""
    s = proxied(make_server, auth_failures_per_ip=1)
    wrong = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    good = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()

    def session(src: str):
        c = raw("submission", server=s, greet=False)
        c.send_raw(v2_header(src, dport=587))
        c.expect("220 ")
        c.cmd("STARTTLS", "220 2.0.0")
        c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
        c.cmd("EHLO laptop.example.test", "250 ")
        return c

    session("2001:db8:1:2::1").cmd("AUTH PLAIN " + wrong, "535 5.7.8")
    session("2001:db8:1:2::ffff").cmd("AUTH PLAIN " + good, "454 4.7.0")  # the same /64
    session("2001:db8:1:3::1").cmd("AUTH PLAIN " + good, "235 2.7.0")  # another one


def test_local_command_keeps_the_socket_address(make_server, raw):
    s = proxied(make_server)
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("", local=True))
    c.expect("220 ")
    c.cmd("NOOP", "250 2.0.0")
    assert [x.client.ip for x in s.server.sessions] == ["127.0.0.1"]


def test_missing_or_bad_header_closes_without_greeting(make_server, raw):
    s = proxied(make_server, proxy_timeout=0.3)
    silent = raw(server=s, greet=False)
    assert silent.closed() and silent.buf == b""
    talker = raw(server=s, greet=False)
    talker.send_raw(b"EHLO client.example.test\r\n")
    assert talker.closed()


def test_untrusted_peer_may_not_send_a_header(make_server, raw):
    s = make_server(proxy_protocol=True, proxy_trusted="10.0.0.0/8, 192.168.0.0/16")
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("203.0.113.7"))
    assert c.closed()
    t = make_server(proxy_protocol=True, proxy_trusted="127.0.0.0/8")
    d = raw(server=t, greet=False)
    d.send_raw(v2_header("203.0.113.7"))
    d.expect("220 ")


def test_an_empty_trusted_setting_trusts_nobody(settings_factory):
    """Issue 13.4 / 12.8: before, an empty MAILFLOW_SMTP_PROXY_TRUSTED let every peer send a header
    (and so pick any client address: relay checks, throttles and Received: all trust it). Now empty
    means none, and PROXY on with none configured does not start, naming the variable to set (the
    environment side for every service: tests/unit/test_proxy_protocol.py)."""
    assert settings_factory().proxy_trusted == ""
    with pytest.raises(ValueError, match="MAILFLOW_SMTP_PROXY_TRUSTED is empty"):
        settings_factory(proxy_protocol=True)
    with pytest.raises(ValueError, match="MAILFLOW_SMTP_PROXY_TRUSTED is empty"):
        settings_factory(proxy_protocol=True, proxy_trusted=" , ")
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP network"):
        settings_factory(proxy_protocol=True, proxy_trusted="10.0.0.0/33")


def test_v1_ipv6_and_unknown(make_server, raw):
    s = proxied(make_server)
    c = raw(server=s, greet=False)
    c.send_raw(encode_v1(("2001:db8::77", 40002), ("2001:db8::1", 25)))
    c.expect("220 ")
    c.cmd("EHLO v6.example.test", "250 ")
    d = raw(server=s, greet=False)
    d.send_raw(b"PROXY UNKNOWN\r\n")  # v1's LOCAL: the socket's address counts
    d.expect("220 ")
    d.cmd("NOOP", "250 2.0.0")
    assert sorted(x.client.ip for x in s.server.sessions) == ["127.0.0.1", "2001:db8::77"]


def test_smtps_reads_the_header_before_the_tls_handshake(make_server, raw, client_tls):
    """The balancer's header comes before the client's ClientHello, in the clear: it is read from the
    socket before TLS starts (before, the SMTPS listener fed it to the TLS layer and failed)."""
    s = proxied(make_server)
    c = raw("smtps", server=s, greet=False)
    c.send_raw(v2_header("203.0.113.44", dport=465))
    c.sock = client_tls.wrap_socket(c.sock, server_hostname="mx.example.test")
    c.expect("220 ")
    c.cmd("EHLO laptop.example.test", "250 ")
    assert [x.client.ip for x in s.server.sessions] == ["203.0.113.44"]
    assert [x.client.tls is not None for x in s.server.sessions] == [True]


def test_a_header_split_over_many_writes_and_pipelined_commands_after_it(make_server, raw):
    s = proxied(make_server)
    c = raw(server=s, greet=False)
    header = encode_v1(("198.51.100.3", 4000), ("192.0.2.10", 25))
    for i in range(0, len(header), 5):
        c.send_raw(header[i : i + 5])
    c.send_raw(b"EHLO a.example.test\r\nNOOP\r\n")
    c.expect("220 ")
    c.expect("250 ")
    c.expect("250 2.0.0")
    assert [x.client.ip for x in s.server.sessions] == ["198.51.100.3"]
