"""Open connections counted per client and in total, across all the listeners of one service.

Every service that accepts clients (smtp-ingress: MX, submission, SMTPS; imap-pop3: IMAP, IMAPS,
POP3, POP3S) caps both counts; over a cap the listener answers its protocol's "busy" (SMTP 421,
IMAP `* BYE`, POP3 `-ERR [SYS/TEMP]`, RFC 3206) and closes. The client is the real one, after the
PROXY header. An IPv6 client counts by its /64: one host usually owns a whole /64, so counting its
addresses one by one would be no limit at all (an IPv4-mapped address counts as the IPv4 one).
The caps are per process: with N replicas a client may open N times as many. Nothing here raises.

`accept` is the accept loop of a listener that takes its connections itself (a PROXY header, or
TLS, must come off the raw socket before any transport exists): imap-pop3's, and smtp-ingress's
with PROXY on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

Refusal = Literal["total", "per_ip"]


def client_key(ip: str) -> str:
    """What one client is: the IPv4 address, or the /64 of an IPv6 address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return ip


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_ip: int):
        """0 turns a cap off."""
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> Refusal | None:
        """None if the connection may go on (it is counted: `release` it when it ends), or the cap
        that refuses it."""
        if self.max_total and self.total >= self.max_total:
            return "total"
        key = client_key(ip)
        n = self.per_ip.get(key, 0)
        if self.max_per_ip and n >= self.max_per_ip:
            return "per_ip"
        self.per_ip[key] = n + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        key = client_key(ip)
        n = self.per_ip.get(key, 0)
        if n <= 1:
            self.per_ip.pop(key, None)
        else:
            self.per_ip[key] = n - 1
        self.total = max(0, self.total - 1)


async def accept(sock: socket.socket, take: Callable[[socket.socket, tuple[str, int]], object]) -> None:
    """Accept on a listening non-blocking socket until it is closed (or the task cancelled); each
    connection, non-blocking and with TCP_NODELAY (replies are whole: never wait for Nagle), goes to
    `take(conn, (ip, port))`, which must not block. EMFILE and friends: wait a little, never spin."""
    loop = asyncio.get_running_loop()
    while sock.fileno() >= 0:
        try:
            conn, addr = await loop.sock_accept(sock)
        except OSError as exc:
            if sock.fileno() < 0:
                return
            log.warning("accept failed: %s", exc)
            await asyncio.sleep(0.1)
            continue
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        take(conn, (str(addr[0]), int(addr[1])))
