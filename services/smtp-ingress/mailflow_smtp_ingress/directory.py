"""A short-lived cache in front of the mailbox-store `Directory`, so a RCPT rarely costs a REST call.

Local recipients are remembered for `ttl` seconds, unknown users and non-local domains for the
shorter `negative_ttl` (a user created a moment ago gets mail within seconds). Concurrent lookups
of one address share a single call. Failures are never cached: a lookup that raises (store down,
timeout) raises to every waiter, and the session answers 451 4.4.3. `authenticate`,
`scram_start`, `scram_finish` and `expired_sessions` are passed through untouched: passwords and logins are never cached here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailflow.cache import Cache, SingleFlight
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
        self.ttl, self.negative_ttl, self.timeout = ttl, negative_ttl, timeout
        self._cache: Cache[str, Resolution] = Cache(size, clock)
        self._flights: SingleFlight[str, Resolution] = SingleFlight()
        self._hit = metrics.DIRECTORY_CACHE.labels("hit")
        self._miss = metrics.DIRECTORY_CACHE.labels("miss")

    def cached(self, address: str) -> Resolution | None:
        """The cached answer, without awaiting (the hot path of RCPT)."""
        found = self._cache.get(address)
        if found is not None:
            self._hit.inc()
        return found

    async def resolve(self, address: str) -> Resolution:
        found = self.cached(address)
        if found is not None:
            return found
        return await self._flights.run(address, lambda: self._lookup(address))

    async def _lookup(self, address: str) -> Resolution:
        self._miss.inc()
        try:
            res = await asyncio.wait_for(self.inner.resolve(address), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("directory lookup timed out") from exc
        self._cache.put(address, res, self.ttl if res.status == "local" else self.negative_ttl)
        return res

    async def authenticate(self, username: str, password: str, service: str = "smtp") -> Principal | None:
        try:
            return await asyncio.wait_for(self.inner.authenticate(username, password, service), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("authentication timed out") from exc

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        try:
            return await asyncio.wait_for(self.inner.scram_start(username), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("authentication timed out") from exc

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "smtp"
    ) -> tuple[Principal, bytes] | None:
        try:
            return await asyncio.wait_for(
                self.inner.scram_finish(username, auth_message, client_proof, service), self.timeout
            )
        except TimeoutError as exc:
            raise ServiceUnavailable("authentication timed out") from exc

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        try:
            return await asyncio.wait_for(self.inner.expired_sessions(tokens), self.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable("session check timed out") from exc

    def forget(self) -> None:
        self._cache.clear()
