"""In-memory stand-ins for the parts a protocol test puts behind a service and does not test itself: the
body store (`Bodies`), delivery's sent log (`SentLog`) and smtp-ingress's queue (`MessageQueue`).

They live here, not in the runtime package every image installs. The mailbox-store has no stand-in:
tests run on the real one (store.py beside this file); `SwitchableDirectory` only puts a switch in
front of it, to make it fail as a store that does not answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mailflow.bodies import BodyMissing, BodyRef
from mailflow.contracts.messages import DeliveryResult, QueuedMessage, TraceEvent
from mailflow.errors import ServiceUnavailable
from mailflow.store.api import Directory, Principal, Resolution


class MemoryQueue:
    """The MessageQueue in memory: keeps what was queued; `fail` makes the next enqueues raise."""

    def __init__(self) -> None:
        self.messages: list[tuple[QueuedMessage, bytes]] = []
        self.traces: list[TraceEvent] = []
        self.fail: Exception | None = None
        self.delay: float = 0.0

    async def enqueue(self, raw: bytes, fields: dict[str, Any]) -> QueuedMessage:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        msg = QueuedMessage(body_ref=f"mem:{fields['queue_id']}", **fields)
        self.messages.append((msg, raw))
        return msg

    async def trace(self, event: TraceEvent) -> None:
        self.traces.append(event)


class MemoryBodies:
    """`Bodies` in memory, for tests of code that takes them."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    async def put(self, queue_id: str, data: bytes) -> str:
        ref = str(BodyRef(queue_id, 1, len(data)))
        self.items[ref] = data
        return ref

    async def get(self, ref: str) -> bytes:
        BodyRef.parse(ref)  # what JetStreamBodies refuses (an inline ref), this refuses too
        try:
            return self.items[ref]
        except KeyError:
            raise BodyMissing(ref) from None

    async def delete(self, ref: str) -> None:
        self.items.pop(ref, None)


class MemorySentLog:
    """`SentLog` in memory."""

    def __init__(self) -> None:
        self.items: dict[str, DeliveryResult] = {}

    async def get(self, key: str) -> DeliveryResult | None:
        return self.items.get(key)

    async def put(self, key: str, result: DeliveryResult) -> None:
        self.items[key] = result


class SwitchableDirectory:
    """A `Directory` (in tests: the real store's client) with a switch: while `down`, every call raises
    ServiceUnavailable without reaching it. `resolves` lists the addresses that were asked."""

    def __init__(self, inner: Directory) -> None:
        self.inner = inner
        self.down = False
        self.resolves: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise ServiceUnavailable("store down")

    async def resolve(self, address: str) -> Resolution:
        self.resolves.append(address)
        self._check()
        return await self.inner.resolve(address)

    async def is_local_domain(self, domain: str) -> bool:
        self._check()
        return await self.inner.is_local_domain(domain)

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        self._check()
        return await self.inner.authenticate(username, password, service)

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        self._check()
        return await self.inner.scram_start(username)

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "imap"
    ) -> tuple[Principal, bytes] | None:
        self._check()
        return await self.inner.scram_finish(username, auth_message, client_proof, service)

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        self._check()
        return await self.inner.expired_sessions(tokens)
