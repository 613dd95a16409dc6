"""PROXY protocol v2 (and v1) in front of the listeners: the address in the header is the client's,
for the Received: header, the per-address connection limit and the AUTH throttle."""

from __future__ import annotations

import base64
import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(
    src: str, sport: int = 40000, dst: str = "192.0.2.10", dport: int = 25, local: bool = False
) -> bytes:
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        fam, addrs = 0x11, s.packed + d.packed
    else:
        fam, addrs = 0x21, s.packed + d.packed
    tail = addrs + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(tail)) + tail


def test_v2_address_goes_into_received_and_envelope(make_server, raw):
    s = make_server(proxy_protocol=True)
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
    s = make_server(proxy_protocol=True)
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("2001:db8::5", dst="2001:db8::1"))
    c.expect("220 ")
    c.cmd("EHLO client.example.test", "250 ")
    d = raw(server=s, greet=False)
    d.send_raw(b"PROXY TCP4 198.51.100.9 192.0.2.10 40001 25\r\n")
    d.expect("220 ")
    d.cmd("HELO v1.example.test", "250 ")
    ips = sorted(x.client.ip for x in s.server.sessions)
    assert ips == ["198.51.100.9", "2001:db8::5"]


def test_per_address_limit_counts_the_real_client(make_server, raw):
    s = make_server(proxy_protocol=True, max_connections_per_ip=1)
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
    s = make_server(proxy_protocol=True, auth_failures_per_ip=1)
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


def test_local_command_keeps_the_socket_address(make_server, raw):
    s = make_server(proxy_protocol=True)
    c = raw(server=s, greet=False)
    c.send_raw(v2_header("", local=True))
    c.expect("220 ")
    c.cmd("NOOP", "250 2.0.0")
    assert [x.client.ip for x in s.server.sessions] == ["127.0.0.1"]


def test_missing_or_bad_header_closes_without_greeting(make_server, raw):
    s = make_server(proxy_protocol=True, proxy_timeout=0.3)
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
