"""The PROXY protocol header (HAProxy, versions 1 and 2) in front of a TCP connection: the one parser
and the one trust rule of every listener that takes it (smtp-ingress: MX, submission, SMTPS;
imap-pop3: IMAP, IMAPS, POP3, POP3S).

A load balancer that terminates nothing but forwards TCP (a Kubernetes Service behind HAProxy, an AWS
NLB...) prepends one header with the real client address. `read_client(sock, peer, trusted, timeout)`
is what a listener does with an accepted socket before any transport owns it: the peer must be inside
`trusted` (`is_trusted`: the configured networks; none configured means nobody), then `read_header`
takes exactly the header from the socket, never a byte more, so what follows (SMTP, IMAP, POP3, a TLS
ClientHello) starts clean. `trusted_networks` and `check_settings` read the services' settings
(`MAILFLOW_SMTP_PROXY_*`, `MAILFLOW_IMAP_PROXY_*`): PROXY on with no trusted network fails at startup.
`encode_v1`/`encode_v2` build headers (for tests and for clients that sit behind us).

Failure: an untrusted peer raises `ProxyUntrusted`; a missing, malformed, truncated or over-long header
(v1 over 107 octets, a v2 address block over V2_MAX_BLOCK) or silence past the timeout raises
`ProxyError`. Either way the caller closes the connection without a word: a listener set up for PROXY
never guesses the client address from a connection that did not send one.
A v2 LOCAL command (health checks of the proxy itself) and v1 UNKNOWN carry no address: `source` is
None and the caller uses the socket's own peer address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # bytes, CRLF included (spec §2.1)
V2_MAX_BLOCK = 4096  # the address block and its TLVs: a few hundred octets in practice (spec §2.2)
_FAMILIES = {0x1: socket.AF_INET, 0x2: socket.AF_INET6}


class ProxyError(Exception):
    pass


class ProxyUntrusted(ProxyError):
    """The peer is not inside the trusted networks: it may not say who the client is."""


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
    if length > V2_MAX_BLOCK:
        raise ProxyError(f"PROXY v2 header longer than {V2_MAX_BLOCK} octets")
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


async def read_header(sock: socket.socket, timeout: float) -> ProxyInfo:
    """One PROXY header (v1 or v2, whichever comes) from a non-blocking accepted socket, before any
    transport owns it, and not one byte past it: what follows (SMTP, IMAP, POP3, a TLS ClientHello)
    stays in the socket. ProxyError for a missing, malformed, truncated or over-long header, and for
    one that does not arrive whole within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await _read(sock)
    except TimeoutError:
        raise ProxyError(f"no PROXY header within {timeout:g} s") from None


async def _read(sock: socket.socket) -> ProxyInfo:
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
        while not line.endswith(b"\n"):
            if len(line) >= V1_MAX:
                raise ProxyError("PROXY v1 line too long")
            # A v1 line has no length field: take what has arrived up to its first LF (a peek, so
            # never past it), or one byte when nothing is there yet.
            try:
                ahead = sock.recv(V1_MAX - len(line), socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                ahead = b""
            lf = ahead.find(b"\n")
            line += await exactly(lf + 1 if lf >= 0 else max(len(ahead), 1))
        return parse_v1(line)
    if head == V2_SIGNATURE[:5]:
        fixed = head + await exactly(11)
        if not fixed.startswith(V2_SIGNATURE):
            raise ProxyError("not a PROXY v2 header")
        length = struct.unpack("!H", fixed[14:16])[0]
        if length > V2_MAX_BLOCK:
            raise ProxyError(f"PROXY v2 header longer than {V2_MAX_BLOCK} octets")
        return parse_v2(fixed + (await exactly(length) if length else b""))
    raise ProxyError("connection did not start with a PROXY header")


# --- who may send one ---------------------------------------------------------------------------------


def trusted_networks(spec: str) -> tuple[Network, ...]:
    """'10.0.0.0/8, 2001:db8::/32' -> the networks; "" -> none. ValueError names a bad item."""
    nets = []
    for item in (x.strip() for x in spec.split(",")):
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return tuple(nets)


def check_settings(enabled: bool, trusted: str, prefix: str) -> None:
    """The settings' rule, for every service's Settings: PROXY on with no trusted network would refuse
    every connection, so the service does not start (ValueError naming both variables)."""
    nets = trusted_networks(trusted)
    if enabled and not nets:
        raise ValueError(
            f"{prefix}PROXY_PROTOCOL is on but {prefix}PROXY_TRUSTED is empty: no peer may send a PROXY "
            f"header, so every connection would be refused. Set {prefix}PROXY_TRUSTED to the networks "
            "(CIDRs) of your load balancers, or turn PROXY_PROTOCOL off."
        )


def is_trusted(ip: str, trusted: tuple[Network, ...]) -> bool:
    """The one trust rule: the peer is inside a configured network. None configured: nobody is.
    An IPv4-mapped IPv6 peer (a dual-stack socket) is judged as its IPv4 address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in trusted)


async def read_client(
    sock: socket.socket, peer: tuple[str, int], trusted: tuple[Network, ...], timeout: float
) -> tuple[str, int]:
    """What every PROXY listener does first: the rule, then the header. Returns the real client's
    (address, port): the header's source, or `peer` for LOCAL/UNKNOWN (the balancer's own health
    check). `ProxyUntrusted` for a peer outside `trusted` (nothing is read from it), ProxyError for
    a bad or missing header; the caller closes the connection without a word either way."""
    if not is_trusted(peer[0], trusted):
        raise ProxyUntrusted(f"{peer[0]} is not a trusted proxy")
    info = await read_header(sock, timeout)
    return info.source or peer


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
