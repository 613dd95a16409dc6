"""Message bodies in flight, kept in the JetStream stream BODY until the queue is done with them.

A body is split into chunks below NATS's max_payload (1 MB by default) and published to
`body.<queue_id>.<n>`, each chunk with Nats-Msg-Id `<queue_id>.<n>`, so a re-publish is dropped.
The reference that travels in the envelope is `nats:<queue_id>:<chunks>:<size>`; reading gets each
chunk by subject with a direct get. A missing chunk raises `BodyMissing` (the body was deleted or
expired: the message cannot be delivered, which the caller treats as permanent). A NATS timeout
raises `ServiceUnavailable` (temporary).

Small bodies never come here: up to `INLINE_MAX` bytes (and `INLINE_TOTAL_MAX` over all recipients'
jobs) a body travels inside the QueuedMessage and each DeliveryJob (`body`), with the reference
`inline:<queue_id>:<size>`; the queue keeps it in its own database until the message is final. That
saves a message three JetStream round trips (put, get, purge). `BodyRef.parse` refuses an inline
reference (ValueError), so code that expects a stored body treats it as a temporary failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mailflow.contracts import subjects
from mailflow.errors import ServiceUnavailable
from mailflow.jspub import publish_until_acked

DEFAULT_CHUNK = 512 * 1024
INLINE_MAX = 256 * 1024  # a body up to this size travels in the envelope, not in stream BODY
INLINE_TOTAL_MAX = 2 * 1024 * 1024  # ... unless its copies in one job per recipient would exceed this


def inline_ref(queue_id: str, size: int) -> str:
    return f"inline:{queue_id}:{size}"


def is_inline(ref: str) -> bool:
    return ref.startswith("inline:")


def should_inline(size: int, recipients: int, limit: int = INLINE_MAX, total: int = INLINE_TOTAL_MAX) -> bool:
    """Inline a body of `size` bytes for `recipients` recipients? (limit 0: never)"""
    return 0 < limit and size <= limit and size * max(1, recipients) <= max(total, limit)


class BodyMissing(Exception):
    pass


@dataclass(frozen=True)
class BodyRef:
    queue_id: str
    chunks: int
    size: int

    def __str__(self) -> str:
        return f"nats:{self.queue_id}:{self.chunks}:{self.size}"

    @classmethod
    def parse(cls, ref: str) -> BodyRef:
        scheme, queue_id, chunks, size = ref.split(":")
        if scheme != "nats":
            raise ValueError(f"unknown body ref {ref!r}")
        return cls(queue_id, int(chunks), int(size))


class Bodies(Protocol):
    async def put(self, queue_id: str, data: bytes) -> str: ...
    async def get(self, ref: str) -> bytes: ...
    async def delete(self, ref: str) -> None: ...


class JetStreamBodies:
    def __init__(self, js: JetStreamContext, chunk_size: int = DEFAULT_CHUNK, timeout: float = 10.0):
        self.js = js
        self.chunk_size = chunk_size
        self.timeout = timeout

    async def put(self, queue_id: str, data: bytes) -> str:
        """Durable (PubAck received for every chunk) when it returns."""
        view = memoryview(data)
        parts = [view[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)] or [view[:0]]
        try:
            await asyncio.gather(
                *(
                    publish_until_acked(self.js, subjects.body(queue_id, n), bytes(part), f"{queue_id}.{n}", self.timeout)
                    for n, part in enumerate(parts)
                )
            )
        except TimeoutError as exc:
            raise ServiceUnavailable("JetStream did not acknowledge the body") from exc
        return str(BodyRef(queue_id, len(parts), len(data)))

    async def _chunk(self, queue_id: str, n: int) -> bytes:
        try:
            msg = await self.js.get_msg("BODY", subject=subjects.body(queue_id, n), direct=True)
        except NotFoundError as exc:
            raise BodyMissing(f"body chunk {n} of {queue_id} is gone") from exc
        except TimeoutError as exc:
            raise ServiceUnavailable("JetStream did not return the body") from exc
        return msg.data or b""

    async def get(self, ref: str) -> bytes:
        r = BodyRef.parse(ref)
        chunks = await asyncio.gather(*(self._chunk(r.queue_id, n) for n in range(r.chunks)))
        data = b"".join(chunks)
        if len(data) != r.size:
            raise BodyMissing(f"body of {r.queue_id} has {len(data)} bytes, expected {r.size}")
        return data

    async def delete(self, ref: str) -> None:
        r = BodyRef.parse(ref)
        await self.js.purge_stream("BODY", subject=subjects.body_all(r.queue_id))
