"""A short-lived cache in front of the mailbox-store `Directory`, so a RCPT rarely costs a REST call.

Local recipients are remembered for `ttl` seconds, unknown users and non-local domains for the
shorter `negative_ttl` (a user created a moment ago gets mail within seconds). Concurrent lookups
of one address share a single call. Failures are never cached: a lookup that raises (store down,
timeout) raises to every waiter, and the session answers 451 4.4.3. `authenticate` and
`expired_sessions` are passed through untouched: passwords and logins are never cached here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from mailflow.errors import ServiceUnavailable
from mailflow.store.api import Directory, Principal, Resolution
from mailflow_smtp_ingress import metrics


class CachedDirectory:
    def __init__(
        self,
        inner: Directory,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        size: int = 100_000,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.inner = inner
        self.ttl, self.negative_ttl, self.size, self.timeout = ttl, negative_ttl, size, timeout
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Resolution]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Resolution]] = {}
        self._hit = metrics.DIRECTORY_CACHE.labels("hit")
        self._miss = metrics.DIRECTORY_CACHE.labels("miss")

    def cached(self, address: str) -> Resolution | None:
        """The cached answer, without awaiting (the hot path of RCPT)."""
        hit = self._cache.get(address)
        if hit is not None and hit[0] > self.clock():
            self._hit.inc()
            return hit[1]
        return None

    async def resolve(self, address: str) -> Resolution:
        found = self.cached(address)
        if found is not None:
            return found
        pending = self._inflight.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        self._miss.inc()
        fut: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._inflight[address] = fut
        try:
            try:
                res = await asyncio.wait_for(self.inner.resolve(address), self.timeout)
            except TimeoutError as exc:
                raise ServiceUnavailable("directory lookup timed out") from exc
            ttl = self.ttl if res.status == "local" else self.negative_ttl
            if ttl > 0:
                self._cache[address] = (self.clock() + ttl, res)
                self._cache.move_to_end(address)
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
            fut.set_result(res)
            return res
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no warning when nobody else waited
            raise
        finally:
            del self._inflight[address]

    async def authenticate(self, username: str, password: str, service: str = "smtp") -> Principal | None:
        try:
            return await asyncio.wait_for(self.inner.authenticate(username, password, service), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("authentication timed out") from exc

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        try:
            return await asyncio.wait_for(self.inner.expired_sessions(tokens), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("session check timed out") from exc

    def forget(self) -> None:
        self._cache.clear()
