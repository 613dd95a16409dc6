"""The PROXY protocol header (HAProxy, versions 1 and 2) in front of a TCP connection.

A load balancer that terminates nothing but forwards TCP (a Kubernetes Service behind HAProxy, an AWS
NLB...) prepends one header with the real client address. `read_header(reader)` reads exactly that
header from an asyncio stream, never a byte more, so the protocol that follows (IMAP, POP3, TLS) starts
clean. `read_header_from_socket(sock)` does the same on an accepted socket before any transport owns
it: the way to go when TLS starts right after the header (a stream would already have buffered the
ClientHello, which TLS then never sees). `encode_v1`/`encode_v2` build headers (for tests and for clients that sit behind us).

Failure: a missing, malformed or truncated header raises `ProxyError`; a stream that stays silent
raises TimeoutError in the caller's `asyncio.timeout()`. Either way the caller closes the connection: a listener set up
for PROXY must never guess the client address from a connection that did not send one.
A v2 LOCAL command (health checks of the proxy itself) and v1 UNKNOWN carry no address: `source` is
None and the caller uses the socket's own peer address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # bytes, CRLF included (spec §2.1)
_FAMILIES = {0x1: socket.AF_INET, 0x2: socket.AF_INET6}


class ProxyError(Exception):
    pass


@dataclass(frozen=True)
class ProxyInfo:
    version: int  # 1 or 2
    command: str  # "PROXY" or "LOCAL" (v1 UNKNOWN is LOCAL)
    source: tuple[str, int] | None = None  # the real client (address, port)
    dest: tuple[str, int] | None = None  # the address the client connected to
    tlvs: dict[int, bytes] = field(default_factory=dict)  # v2 type-length-values (ALPN, SNI, ...)


def parse_v1(line: bytes) -> ProxyInfo:
    """One v1 line, CRLF included: b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 143\\r\\n"."""
    if len(line) > V1_MAX or not line.endswith(b"\r\n"):
        raise ProxyError("PROXY v1 line too long or not ended by CRLF")
    parts = line[:-2].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyError("not a PROXY v1 line")
    proto = parts[1]
    if proto == b"UNKNOWN":
        return ProxyInfo(1, "LOCAL")
    if proto not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyError(f"bad PROXY v1 line {line[:60]!r}")
    try:
        src, dst = (ipaddress.ip_address(p.decode("ascii")) for p in parts[2:4])
        sport, dport = (int(p) for p in parts[4:6])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProxyError(f"bad PROXY v1 address: {exc}") from exc
    if src.version != (4 if proto == b"TCP4" else 6) or dst.version != src.version:
        raise ProxyError("PROXY v1 address family mismatch")
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535) or any(
        p != str(int(p)).encode() for p in parts[4:6]
    ):
        raise ProxyError("bad PROXY v1 port")
    return ProxyInfo(1, "PROXY", (str(src), sport), (str(dst), dport))


def parse_v2(header: bytes) -> ProxyInfo:
    """A whole v2 header: the 16 fixed bytes and the address block that their length announces."""
    if len(header) < 16 or not header.startswith(V2_SIGNATURE):
        raise ProxyError("not a PROXY v2 header")
    ver_cmd, fam, length = header[12], header[13], struct.unpack("!H", header[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2 header with version {ver_cmd >> 4}")
    if len(header) != 16 + length:
        raise ProxyError("PROXY v2 header length mismatch")
    command = ver_cmd & 0xF
    if command == 0x0:
        return ProxyInfo(2, "LOCAL")
    if command != 0x1:
        raise ProxyError(f"PROXY v2 command {command} unknown")
    block = header[16:]
    family = _FAMILIES.get(fam >> 4)
    if family is None:  # AF_UNSPEC or AF_UNIX: no usable address (spec: accept, use the real one)
        return ProxyInfo(2, "LOCAL", tlvs=_tlvs(block[216:] if fam >> 4 == 0x3 else b""))
    if fam & 0xF not in (0x1,):  # only STREAM makes sense in front of IMAP/POP3
        raise ProxyError("PROXY v2 transport is not STREAM")
    alen = 4 if family == socket.AF_INET else 16
    if len(block) < 2 * alen + 4:
        raise ProxyError("PROXY v2 address block too short")
    src = socket.inet_ntop(family, block[:alen])
    dst = socket.inet_ntop(family, block[alen : 2 * alen])
    sport, dport = struct.unpack("!HH", block[2 * alen : 2 * alen + 4])
    return ProxyInfo(2, "PROXY", (src, sport), (dst, dport), _tlvs(block[2 * alen + 4 :]))


def _tlvs(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + 3 <= len(data):
        kind, n = data[pos], struct.unpack("!H", data[pos + 1 : pos + 3])[0]
        if pos + 3 + n > len(data):
            raise ProxyError("PROXY v2 TLV runs past the header")
        out[kind] = data[pos + 3 : pos + 3 + n]
        pos += 3 + n
    if pos != len(data):
        raise ProxyError("PROXY v2 trailing bytes after the TLVs")
    return out


async def read_header(reader: asyncio.StreamReader) -> ProxyInfo:
    """Read one PROXY header (v1 or v2, whichever comes) and nothing after it. Callers bound the wait:
    `async with asyncio.timeout(5): info = await read_header(reader)`."""
    try:
        head = await reader.readexactly(5)
        if head == b"PROXY":
            rest = b""
            while not rest.endswith(b"\r\n"):
                if len(head) + len(rest) >= V1_MAX:
                    raise ProxyError("PROXY v1 line too long")
                rest += await reader.readexactly(1)
            return parse_v1(head + rest)
        if head == V2_SIGNATURE[:5]:
            fixed = head + await reader.readexactly(11)
            if not fixed.startswith(V2_SIGNATURE):
                raise ProxyError("not a PROXY v2 header")
            length = struct.unpack("!H", fixed[14:16])[0]
            return parse_v2(fixed + await reader.readexactly(length))
    except asyncio.IncompleteReadError as exc:
        raise ProxyError("connection closed inside the PROXY header") from exc
    raise ProxyError("connection did not start with a PROXY header")


async def read_header_from_socket(sock: socket.socket) -> ProxyInfo:
    """`read_header` for a non-blocking accepted socket: exact reads, nothing after the header consumed."""
    loop = asyncio.get_running_loop()

    async def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = await loop.sock_recv(sock, n - len(buf))
            if not chunk:
                raise ProxyError("connection closed inside the PROXY header")
            buf += chunk
        return buf

    head = await exactly(5)
    if head == b"PROXY":
        line = head
        while not line.endswith(b"\r\n"):
            if len(line) >= V1_MAX:
                raise ProxyError("PROXY v1 line too long")
            line += await exactly(1)  # a v1 line has no length field: one byte at a time, never past it
        return parse_v1(line)
    if head == V2_SIGNATURE[:5]:
        fixed = head + await exactly(11)
        if not fixed.startswith(V2_SIGNATURE):
            raise ProxyError("not a PROXY v2 header")
        length = struct.unpack("!H", fixed[14:16])[0]
        return parse_v2(fixed + (await exactly(length) if length else b""))
    raise ProxyError("connection did not start with a PROXY header")


def encode_v1(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    ip = ipaddress.ip_address(source[0])
    proto = "TCP4" if ip.version == 4 else "TCP6"
    return f"PROXY {proto} {source[0]} {dest[0]} {source[1]} {dest[1]}\r\n".encode()


def encode_v2(
    source: tuple[str, int] | None, dest: tuple[str, int] | None = None, tlvs: dict[int, bytes] | None = None
) -> bytes:
    """A v2 PROXY header; `source=None` makes a LOCAL one."""
    extra = b"".join(bytes([k]) + struct.pack("!H", len(v)) + v for k, v in (tlvs or {}).items())
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(extra)) + extra
    v4 = ipaddress.ip_address(source[0]).version == 4
    dest = dest or (("0.0.0.0", 0) if v4 else ("::", 0))
    family, fam = (socket.AF_INET, 0x11) if v4 else (socket.AF_INET6, 0x21)
    block = (
        socket.inet_pton(family, source[0])
        + socket.inet_pton(family, dest[0])
        + struct.pack("!HH", source[1], dest[1])
        + extra
    )
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block
