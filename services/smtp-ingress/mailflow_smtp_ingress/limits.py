"""Per-client-address limits shared by all sessions of one process: failed AUTHs (open connections:
mailflow.connections, shared with imap-pop3).

Counted by the client address after PROXY protocol (the real client, not the load balancer).
Nothing here raises; memory is bounded (the oldest addresses are forgotten first). The limits are
per process: with N replicas an address may open N times the connections (documented in README).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


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
