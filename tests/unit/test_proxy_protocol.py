"""PROXY protocol v1/v2 headers: parsed exactly, nothing read past them, junk refused; and the one
trust rule (only configured networks may send one; none configured means nobody)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mailflow.proxy_protocol import (
    V2_MAX_BLOCK,
    V2_SIGNATURE,
    ProxyError,
    ProxyUntrusted,
    check_settings,
    encode_v1,
    encode_v2,
    is_trusted,
    parse_v1,
    parse_v2,
    read_client,
    read_header,
    trusted_networks,
)


@pytest.mark.parametrize(
    "line, source, dest",
    [
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\n", ("192.0.2.7", 56324), ("198.51.100.1", 143)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 993\r\n", ("2001:db8::7", 4000), ("2001:db8::1", 993)),
    ],
)
def test_v1_addresses(line, source, dest):
    info = parse_v1(line)
    assert (info.version, info.command, info.source, info.dest) == (1, "PROXY", source, dest)


def test_v1_unknown_is_local():
    assert parse_v1(b"PROXY UNKNOWN\r\n").command == "LOCAL"
    assert parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a port missing
        b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 143\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 143\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 143\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 143\n",
        b"PROXY TCP4 " + b"1" * 100 + b"\r\n",
    ],
)
def test_v1_junk(line):
    with pytest.raises(ProxyError):
        parse_v1(line)


def test_v2_round_trip_v4_v6_local_and_tlvs():
    info = parse_v2(encode_v2(("192.0.2.7", 40000), ("198.51.100.1", 993), {0x01: b"imap", 0x02: b"mx.test"}))
    assert info.source == ("192.0.2.7", 40000) and info.dest == ("198.51.100.1", 993)
    assert info.tlvs == {0x01: b"imap", 0x02: b"mx.test"}
    info = parse_v2(encode_v2(("2001:db8::7", 1), ("2001:db8::1", 2)))
    assert info.source == ("2001:db8::7", 1)
    local = parse_v2(encode_v2(None))
    assert local.command == "LOCAL" and local.source is None


@pytest.mark.parametrize(
    "header",
    [
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 0]),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x2F, 0x11, 0, 0]),  # unknown command
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + b"\x00" * 4,  # address block too short
        V2_SIGNATURE + bytes([0x21, 0x12, 0, 12]) + b"\x00" * 12,  # DGRAM
        encode_v2(("192.0.2.7", 1), ("192.0.2.8", 2))[:-1],  # truncated
    ],
)
def test_v2_junk(header):
    with pytest.raises(ProxyError):
        parse_v2(header)


def connected(data: bytes, close: bool = True) -> tuple[socket.socket, socket.socket]:
    """(server side, non-blocking, with `data` waiting in it; the client side, closed after it if `close`)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.sendall(data)
    if close:
        b.shutdown(socket.SHUT_WR)
    return a, b


@pytest.mark.parametrize(
    "header, source",
    [
        (encode_v2(("192.0.2.7", 40000), ("198.51.100.1", 993)), ("192.0.2.7", 40000)),
        (encode_v2(("2001:db8::7", 40000), ("2001:db8::1", 993), {0x04: b"x" * 200}), ("2001:db8::7", 40000)),
        (encode_v1(("192.0.2.8", 1), ("192.0.2.1", 2)), ("192.0.2.8", 1)),
        (encode_v1(("2001:db8::8", 1), ("2001:db8::1", 2)), ("2001:db8::8", 1)),
    ],
)
async def test_read_header_reads_exactly_the_header(header, source):
    a, b = connected(header + b"\x16\x03\x01 ClientHello...", close=False)
    info = await read_header(a, 5)
    assert info.source == source
    assert a.recv(100) == b"\x16\x03\x01 ClientHello..."
    a.close()
    b.close()


async def test_read_header_takes_a_v1_line_that_comes_in_pieces():
    a, b = socket.socketpair()
    a.setblocking(False)
    line = encode_v1(("192.0.2.8", 1), ("192.0.2.1", 2))

    async def dribble() -> None:
        for i in range(0, len(line), 7):
            b.sendall(line[i : i + 7])
            await asyncio.sleep(0)
        b.sendall(b"EHLO x\r\n")

    task = asyncio.create_task(dribble())
    assert (await read_header(a, 5)).source == ("192.0.2.8", 1)
    await task
    assert a.recv(100) == b"EHLO x\r\n"
    a.close()
    b.close()


@pytest.mark.parametrize(
    "data",
    [
        b"a1 LOGIN x y\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4",  # closed inside the line
        b"\r\n\r\n\x00\r\nQUI",
        b"",
        b"PROXY " + b"x" * 200,  # no end within 107 octets
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 143\n",  # LF without CR
        V2_SIGNATURE + bytes([0x21, 0x11]) + (V2_MAX_BLOCK + 1).to_bytes(2, "big") + b"\x00" * 8,  # too long
    ],
)
async def test_read_header_refuses_a_connection_without_one(data):
    a, b = connected(data)
    with pytest.raises(ProxyError):
        await read_header(a, 5)
    a.close()
    b.close()


async def test_read_header_times_out_on_silence_and_on_half_a_header():
    for data in (b"", b"PROXY TCP4 192.0.2.7"):
        a, b = connected(data, close=False)
        with pytest.raises(ProxyError, match="within"):
            await read_header(a, 0.05)
        a.close()
        b.close()


@pytest.mark.parametrize(
    "ip, spec, trusted",
    [
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.0.0.0/8, 192.168.0.0/16", True),
        ("192.168.7.7", " 10.0.0.0/8 ,192.168.0.0/16 ", True),
        ("172.16.0.1", "10.0.0.0/8", False),
        ("10.1.2.3", "", False),  # nothing configured: nobody is trusted
        ("127.0.0.1", "", False),
        ("::ffff:10.1.2.3", "10.0.0.0/8", True),  # IPv4-mapped (a dual-stack socket) counts as IPv4
        ("2001:db8::5", "2001:db8::/32", True),
        ("2001:db9::5", "2001:db8::/32", False),
        ("2001:db8::5", "10.0.0.0/8", False),
        ("not an address", "0.0.0.0/0", False),
    ],
)
def test_the_trust_rule(ip, spec, trusted):
    assert is_trusted(ip, trusted_networks(spec)) is trusted


def test_settings_rule_empty_trusts_none_and_proxy_on_needs_networks():
    assert trusted_networks("") == trusted_networks(" , ") == ()
    check_settings(False, "", "MAILFLOW_SMTP_")  # off: nothing to trust
    check_settings(True, "10.0.0.0/8", "MAILFLOW_SMTP_")
    with pytest.raises(ValueError, match="MAILFLOW_IMAP_PROXY_TRUSTED is empty"):
        check_settings(True, "", "MAILFLOW_IMAP_")
    with pytest.raises(ValueError, match="'10.0.0.300/8' is not an IP network"):
        trusted_networks("10.0.0.0/8,10.0.0.300/8")


@pytest.mark.parametrize(
    "module, prefix", [("mailflow_smtp_ingress.settings", "MAILFLOW_SMTP_"), ("mailflow_imap_pop3.settings", "MAILFLOW_IMAP_")]
)
def test_every_service_trusts_no_network_unless_configured(module, prefix, monkeypatch):
    """Issue 12.8 / 13.4: no default trusts anyone (imap-pop3 trusted every private range, smtp-ingress
    every peer when empty); PROXY on with none configured would refuse every connection, so the service
    does not start and says which variable to set. The variables are named alike in every service."""
    import importlib

    settings = importlib.import_module(module).Settings
    assert settings(service_token="t").proxy_trusted == ""
    monkeypatch.setenv(f"{prefix}PROXY_PROTOCOL", "true")
    with pytest.raises(ValueError, match=f"{prefix}PROXY_TRUSTED is empty"):
        settings(service_token="t")
    monkeypatch.setenv(f"{prefix}PROXY_TRUSTED", "10.0.0.0/8,not-a-net")
    with pytest.raises(ValueError, match="'not-a-net' is not an IP network"):
        settings(service_token="t")
    monkeypatch.setenv(f"{prefix}PROXY_TRUSTED", "10.0.0.0/8, fd00::/8")
    assert settings(service_token="t").proxy_trusted == "10.0.0.0/8, fd00::/8"


async def test_read_client_reads_nothing_from_an_untrusted_peer():
    header = encode_v2(("192.0.2.7", 40000), ("198.51.100.1", 25))
    a, b = connected(header + b"EHLO x\r\n", close=False)
    with pytest.raises(ProxyUntrusted):
        await read_client(a, ("127.0.0.1", 5000), trusted_networks("10.0.0.0/8"), 5)
    assert a.recv(100) == header + b"EHLO x\r\n"  # not a byte taken
    a.close()
    b.close()
    a, b = connected(header, close=False)
    assert await read_client(a, ("127.0.0.1", 5000), trusted_networks("127.0.0.0/8"), 5) == ("192.0.2.7", 40000)
    a.close()
    b.close()
    a, b = connected(encode_v2(None), close=False)  # LOCAL: the balancer's own health check
    assert await read_client(a, ("127.0.0.1", 5000), trusted_networks("127.0.0.0/8"), 5) == ("127.0.0.1", 5000)
    a.close()
    b.close()
