"""PROXY protocol v1/v2 headers: parsed exactly, nothing read past them, junk refused."""

from __future__ import annotations

import asyncio

import pytest

from mailflow.proxy_protocol import (
    V2_SIGNATURE,
    ProxyError,
    encode_v1,
    encode_v2,
    parse_v1,
    parse_v2,
    read_header,
)


def reader_with(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


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


async def test_read_header_reads_exactly_the_header():
    r = reader_with(encode_v2(("192.0.2.7", 40000), ("198.51.100.1", 143)) + b"a1 CAPABILITY\r\n")
    info = await read_header(r)
    assert info.source == ("192.0.2.7", 40000)
    assert await r.read() == b"a1 CAPABILITY\r\n"
    r = reader_with(encode_v1(("192.0.2.9", 5), ("192.0.2.1", 110)) + b"USER x\r\n")
    assert (await read_header(r)).source == ("192.0.2.9", 5)
    assert await r.read() == b"USER x\r\n"


@pytest.mark.parametrize(
    "data", [b"a1 LOGIN x y\r\n", b"PROXY TCP4 1.2.3.4", b"\r\n\r\n\x00\r\nQUI", b"", b"PROXY " + b"x" * 200]
)
async def test_read_header_refuses_a_connection_without_one(data):
    with pytest.raises(ProxyError):
        await read_header(reader_with(data))


async def test_read_header_times_out_on_silence():
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await read_header(reader_with(b"", eof=False))


async def test_read_header_from_socket_leaves_the_rest_unread():
    import socket

    from mailflow.proxy_protocol import read_header_from_socket

    for header in (
        encode_v2(("192.0.2.7", 40000), ("198.51.100.1", 993)),
        encode_v1(("192.0.2.8", 1), ("192.0.2.1", 2)),
    ):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.sendall(header + b"\x16\x03\x01 ClientHello...")
        info = await read_header_from_socket(a)
        assert info.source[0] in ("192.0.2.7", "192.0.2.8")
        assert a.recv(100) == b"\x16\x03\x01 ClientHello..."
        a.close()
        b.close()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.sendall(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProxyError):
        await read_header_from_socket(a)
    b.close()
    a.close()
