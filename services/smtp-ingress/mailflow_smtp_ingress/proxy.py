"""PROXY protocol (HAProxy v1 and v2) in front of an SMTP session, parsed by aiosmtpd.

aiosmtpd 1.4 gives a complete parser (`aiosmtpd.proxy_protocol.get_proxy`: v1 text, v2 binary with
TLVs, LOCAL/PROXY commands) that reads from any object with `read`, `readexactly` and `readuntil`.
`BufferReader` is that object over a session's own buffer, so the header is taken out byte-exact
and the SMTP dialogue starts on the first byte after it.

Failure: a peer outside `proxy_trusted`, a missing or malformed header, or silence past the timeout
closes the connection without a greeting: a PROXY listener never guesses the client address.
A v2 LOCAL header (the balancer's own health check) or v1 UNKNOWN keeps the socket's peer address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING

from aiosmtpd.proxy_protocol import AF, V2_CMD, get_proxy

from mailflow_smtp_ingress import metrics

if TYPE_CHECKING:
    from mailflow_smtp_ingress.session import Session

log = logging.getLogger(__name__)

_MAX_V1 = 107  # the longest v1 line, CRLF included


class BufferReader:
    def __init__(self, session: Session):
        self.s = session

    async def read(self, n: int = -1) -> bytes:
        while not self.s.buf:
            await self.s._more()
        n = len(self.s.buf) if n < 0 else n
        data = bytes(self.s.buf[:n])
        del self.s.buf[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self.s.buf) < n:
            await self.s._more()
        data = bytes(self.s.buf[:n])
        del self.s.buf[:n]
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while (i := self.s.buf.find(separator)) < 0:
            if len(self.s.buf) > _MAX_V1:
                raise ValueError("PROXY header too long")
            await self.s._more()
        data = bytes(self.s.buf[: i + len(separator)])
        del self.s.buf[: i + len(separator)]
        return data


def trusted_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item.strip(), strict=False) for item in spec.split(",") if item.strip()]


async def read_proxy(session: Session, trusted: list, wait: float) -> bool:
    """Read the header and put the real client address into `session.client`. False: closed."""
    client = session.client
    if trusted:
        peer = ipaddress.ip_address(client.ip)
        if not any(peer in net for net in trusted):
            metrics.REJECTED.labels("connect", "proxy_untrusted").inc()
            log.warning("PROXY header from an untrusted peer refused", extra={"peer": client.ip})
            session.close()
            return False
    try:
        data = await asyncio.wait_for(get_proxy(BufferReader(session)), wait)
    except Exception as exc:  # timeout, connection lost, header too long
        data = None
        log.info("no PROXY header: %s", type(exc).__name__)
    if data is None or not data.valid:
        metrics.REJECTED.labels("connect", "proxy_invalid").inc()
        if data is not None:
            log.warning("bad PROXY header: %s", data.error)
        session.close()
        return False
    local = (data.version == 2 and data.command == V2_CMD.LOCAL) or data.family in (AF.UNSPEC, AF.UNIX)
    if not local and data.src_addr is not None:
        client.ip = str(data.src_addr)
        client.port = int(data.src_port or 0)
    return True
