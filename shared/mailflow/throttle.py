"""Failed logins counted per client, for smtp-ingress's AUTH and imap-pop3's LOGIN/AUTHENTICATE/USER-PASS.

A client is `mailflow.connections.client_key` of the address after PROXY: the IPv4 address, or the
/64 of an IPv6 one (a host owns a whole /64; counting its addresses one by one would be no limit).
Each failure within `window` seconds counts. The first `free` cost nothing; each one after them waits
`delay` x 2^(n-1) seconds before it is answered, at most `max_delay` (a tarpit: guessing gets slow,
a typo does not). With `max_failures` failures in the window the client is `blocked`: every login is
refused without asking the store until the oldest failure leaves the window. A success wipes
nothing: one valid account must not reset the guessing budget for others.

Memory is bounded: past `max_entries` clients the one that failed least recently is forgotten, and
per client no more failures are kept than decide anything.
Nothing here raises. The counts are per process: with N replicas a client gets N times the budget.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from mailflow.connections import client_key


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        window: float,
        free: int = 0,
        delay: float = 1.0,
        max_delay: float = 15.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`max_failures` 0 never blocks."""
        self.max_failures, self.window = max_failures, window
        self.free, self.delay, self.max_delay = free, delay, max_delay
        self.max_entries, self.clock = max_entries, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def failures(self, ip: str) -> int:
        """Failures of this client within the window."""
        times = self._recent(client_key(ip))
        return 0 if times is None else len(times)

    def blocked(self, ip: str) -> bool:
        """True while this client may not log in at all."""
        return bool(self.max_failures) and self.failures(ip) >= self.max_failures

    def failed(self, ip: str) -> float:
        """Count a failure; returns how many seconds to wait before answering it."""
        key = client_key(ip)
        times = self._recent(key)
        if times is None:
            # No more failures are kept than decide anything: enough to block, and enough for the delay
            # to reach max_delay (at 2^63 x delay it has).
            times = self._failures[key] = deque(maxlen=max(self.max_failures, self.free + 64))
        times.append(self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        over = len(times) - self.free
        return 0.0 if over <= 0 else min(self.max_delay, self.delay * 2.0 ** min(over - 1, 63))
