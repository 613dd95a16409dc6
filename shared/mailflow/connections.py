"""Open connections counted per client and in total, across all the listeners of one service; the
deadlines a client's input must meet; and the accept loop.

Every service that accepts clients (smtp-ingress: MX, submission, SMTPS; imap-pop3: IMAP, IMAPS,
POP3, POP3S) caps both counts. The client is the real one, after the PROXY header. An IPv6 client
counts by its /64: one host usually owns a whole /64, so counting its addresses one by one would be
no limit at all (an IPv4-mapped address counts as the IPv4 one). The caps are per process: with N
replicas a client may open N times as many. Nothing here raises.

The total cap is never above what the process may open: `ConnectionLimiter` first raises the soft
RLIMIT_NOFILE to the hard one, then keeps FD_RESERVE descriptors for everything but clients (NATS,
the store's connection pool, the listening sockets, files, a connection being refused). So accept()
does not meet EMFILE because of clients, and a full server still answers.
At the total cap the oldest connection that has not authenticated and waits for the client is
evicted (its session says its protocol's "busy" and closes) to make room, as Dovecot's login
processes do ("Connection queue full"): a flood of silent or slow connections then cannot lock out a
real client, who logs in within a second and is never evicted after that. When every connection is
authenticated or busy, the new one is refused instead (SMTP 421, IMAP `* BYE`, POP3 `-ERR [SYS/TEMP]`,
RFC 3206). Over the per-client cap the new one is always refused: evicting another client's
connection for it would let one address push everybody else out.

`InputDeadline` is the slowloris rule, the same for every protocol: while the server waits for a piece
of input (a command line, with its literals; a message body), the piece must be complete within
`timeout` seconds of the wait's start plus one second per `min_rate` octets of it received so far. A
client dribbling a byte every few seconds gets nothing for its bytes and is cut at `timeout`, while a
25 MB message over a slow link has all the time its size asks for. Before authentication the session
also has a total `lifetime`, whatever it sends.

`accept` is the accept loop of a listener that takes its connections itself (a PROXY header, or
TLS, must come off the raw socket before any transport exists): imap-pop3's, and smtp-ingress's
with PROXY on. Should accept() still fail with EMFILE/ENFILE (a descriptor leak, another cap), it
gives up a spare descriptor to take the waiting connection and close it at once (libuv's trick), so
the backlog is neither served late nor spun on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import os
import resource
import socket
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

Refusal = Literal["total", "per_ip"]

# Descriptors kept for everything but clients: NATS, the store client's pool (64), listening sockets,
# the event loop's own, log and data files, and the connection being refused or evicting another.
FD_RESERVE = 128


def client_key(ip: str) -> str:
    """What one client is: the IPv4 address, or the /64 of an IPv6 address."""
    if ":" not in ip:  # IPv4 (or not an address at all): itself, without parsing it (~4 % of a login's CPU)
        return ip
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return ip


def open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (if the kernel lets us) and return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        want = 65536 if hard == resource.RLIM_INFINITY else hard  # "unlimited" is refused for files
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(configured: int, fd_limit: int, reserve: int = FD_RESERVE) -> int:
    """The total cap: the configured one (0: none), but never more than the descriptors allow."""
    fit = max(fd_limit - reserve, fd_limit // 2)
    return min(configured, fit) if configured else fit


class Slot:
    """One counted connection. Its session sets `evict` while it may be evicted (it has not
    authenticated); `evict()` returns True if it did end the session (it was waiting for the client)."""

    __slots__ = ("ip", "evict")

    def __init__(self, ip: str):
        self.ip = ip
        self.evict: Callable[[], bool] | None = None


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_ip: int, fd_limit: int | None = None):
        """0 turns the per-client cap off, and the total cap down to what the descriptors allow
        (`fd_limit`; None: this process's, raised to its hard limit)."""
        fds = open_files_limit() if fd_limit is None else fd_limit
        self.max_total, self.max_per_ip = connection_cap(max_total, fds), max_per_ip
        self.held: dict[Slot, None] = {}  # oldest first
        self.per_ip: dict[str, int] = {}
        self.evicted = 0

    @property
    def total(self) -> int:
        return len(self.held)

    def acquire(self, slot: Slot) -> Refusal | None:
        """None if the connection may go on (it is counted: `release` it when it ends), or the cap
        that refuses it. At the total cap, the oldest evictable connection makes room."""
        key = client_key(slot.ip)
        n = self.per_ip.get(key, 0)
        if self.max_per_ip and n >= self.max_per_ip:
            return "per_ip"
        if len(self.held) >= self.max_total and not self._evict_one():
            return "total"
        self.per_ip[key] = self.per_ip.get(key, 0) + 1  # the eviction may have changed it
        self.held[slot] = None
        return None

    def _evict_one(self) -> bool:
        for old in self.held:
            if old.evict is not None and old.evict():
                self.release(old)
                self.evicted += 1
                return True
        return False

    def release(self, slot: Slot) -> None:
        """The connection ended (again, or after its eviction: nothing happens)."""
        if slot not in self.held:
            return
        del self.held[slot]
        key = client_key(slot.ip)
        n = self.per_ip.get(key, 0)
        if n <= 1:
            self.per_ip.pop(key, None)
        else:
            self.per_ip[key] = n - 1


class InputDeadline:
    """The slowloris rule (see above) for one connection: `expired()` is called once the piece of input
    awaited since `begin()` is late, or the `lifetime` (0: none) is over, and the session is not
    `busy()` (a command running: no input is awaited then). `received(n)` on every read is one
    addition; the timer wakes only when the deadline may be due."""

    __slots__ = ("loop", "timeout", "min_rate", "expired", "busy", "started", "octets", "ends", "handle")

    def __init__(
        self,
        timeout: float,
        min_rate: float,
        expired: Callable[[], None],
        busy: Callable[[], bool] = lambda: False,
        lifetime: float = 0.0,
    ):
        self.loop = asyncio.get_running_loop()
        self.timeout, self.min_rate, self.expired, self.busy = timeout, min_rate, expired, busy
        self.started = now = self.loop.time()
        self.octets = 0
        self.ends = now + lifetime if lifetime else math.inf
        self.handle = self.loop.call_at(self.due(), self._check)

    def due(self) -> float:
        return min(self.started + self.timeout + self.octets / self.min_rate, self.ends)

    def begin(self) -> None:
        """A new piece is awaited (a reply went out): its clock starts now."""
        self.started = self.loop.time()
        self.octets = 0

    def received(self, n: int) -> None:
        self.octets += n

    def authenticated(self, timeout: float) -> None:
        """No lifetime any more; pieces get `timeout` from now on."""
        self.timeout, self.ends = timeout, math.inf
        self.handle.cancel()
        self.handle = self.loop.call_at(self.due(), self._check)

    def _check(self) -> None:
        now, due = self.loop.time(), self.due()
        if now < due or self.busy():
            self.handle = self.loop.call_at(max(due, now + (1.0 if now >= due else 0.0)), self._check)
            return
        self.expired()

    def cancel(self) -> None:
        self.handle.cancel()


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


async def accept(sock: socket.socket, take: Callable[[socket.socket, tuple[str, int]], object]) -> None:
    """Accept on a listening non-blocking socket until it is closed (or the task cancelled); each
    connection, non-blocking and with TCP_NODELAY (replies are whole: never wait for Nagle), goes to
    `take(conn, (ip, port))`, which must not block. EMFILE/ENFILE: the spare descriptor makes room to
    take the waiting connection and close it; any other failure (or no spare): wait a little."""
    loop = asyncio.get_running_loop()
    spare = _spare()
    try:
        while sock.fileno() >= 0:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:
                if sock.fileno() < 0:
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE) and spare is not None:
                    os.close(spare)
                    with contextlib.suppress(OSError):
                        sock.accept()[0].close()
                    spare = _spare()
                    log.warning("accept failed (%s): a waiting connection was closed", exc)
                    await asyncio.sleep(0)
                    continue
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            take(conn, (str(addr[0]), int(addr[1])))
    finally:
        if spare is not None:
            os.close(spare)
