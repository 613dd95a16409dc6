"""What delivery has handed to a remote MTA, keyed by the job's idempotency key (queue id + recipient).

Written right after the remote's 2xx to the final dot, before the result is published and the job
acknowledged; read before every remote attempt. A redelivered job (crash, lost ack) whose recipient
is in the log is answered from the log and never sent again. Kept in a JetStream key-value bucket
(file storage, the streams' replicas) for the queue lifetime plus two days, shared by every delivery
process; the queue creates it with the streams (`streams.sent_log_config`). If the bucket cannot be read the attempt is deferred (never sent blind); if it cannot be
written the result is still published (the window is the same one every MTA has between "250" and
its own bookkeeping).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from mailflow.contracts.messages import DeliveryResult
from mailflow.contracts.streams import SENT_LOG_BUCKET as BUCKET


def _key(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


class SentLog(Protocol):
    async def get(self, key: str) -> DeliveryResult | None: ...
    async def put(self, key: str, result: DeliveryResult) -> None: ...


class KvSentLog:
    def __init__(self, kv):
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> KvSentLog:
        """The bucket the queue made (BucketNotFoundError before that: `streams.wait_for` first)."""
        return cls(await js.key_value(BUCKET))

    async def get(self, key: str) -> DeliveryResult | None:
        try:
            entry = await self.kv.get(_key(key))
        except KeyNotFoundError:
            return None
        return DeliveryResult.from_bytes(entry.value) if entry.value else None

    async def put(self, key: str, result: DeliveryResult) -> None:
        await self.kv.put(_key(key), result.to_bytes())
