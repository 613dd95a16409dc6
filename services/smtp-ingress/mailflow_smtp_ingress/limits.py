"""Per-client-address limits shared by all sessions of one process: open connections, failed AUTHs.

Counted by the client address after PROXY protocol (the real client, not the load balancer).
Nothing here raises; memory is bounded (the oldest addresses are forgotten first). The limits are
per process: with N replicas an address may open N times the connections (documented in README).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from mailflow_smtp_ingress import replies as R


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> R.Reply | None:
        """None if the connection may go on (and is counted); else the 421 to send before closing."""
        if self.max_total and self.total >= self.max_total:
            return R.R421_SERVER_BUSY
        n = self.per_ip.get(ip, 0)
        if self.max_per_ip and n >= self.max_per_ip:
            return R.R421_TOO_MANY_CONNECTIONS
        self.per_ip[ip] = n + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0)
        if n <= 1:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = n - 1
        self.total = max(0, self.total - 1)


class AuthThrottle:
    """At most `max_failures` failed AUTHs per address within `window` seconds; then AUTH is refused
    (454 4.7.0) until the oldest failure leaves the window. A success does not wipe the record: one
    valid account must not reset the guessing budget for others."""

    def __init__(
        self,
        max_failures: int,
        window: float,
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures, self.window, self.size, self.clock = max_failures, window, size, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, ip: str) -> deque[float] | None:
        q = self._failures.get(ip)
        if q is None:
            return None
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._failures[ip]
            return None
        return q

    def blocked(self, ip: str) -> bool:
        q = self._recent(ip)
        return bool(self.max_failures) and q is not None and len(q) >= self.max_failures

    def failed(self, ip: str) -> int:
        """Record a failure; returns how many are in the window now."""
        q = self._recent(ip)
        if q is None:
            q = self._failures[ip] = deque()
        q.append(self.clock())
        self._failures.move_to_end(ip)
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)
        return len(q)
