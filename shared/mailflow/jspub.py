"""Publishing many JetStream messages at once and waiting for all their acknowledgements together.

`nats-py`'s `js.publish` makes a request (a future and a timer) per message; a worker that publishes
a whole batch (jobs, results, trace events) spends most of its publishing CPU there. `BatchPublisher`
sends every message of a batch with its own reply subject under one inbox subscription and waits for
all PubAcks with a single timeout: about a third of the CPU per message.

Errors are per message: `publish` returns, in order, the PubAck (a dict: stream, seq, duplicate) or
the exception for that message (`PubAckError` for a JetStream error or when no stream takes the
subject, `TimeoutError` when no PubAck came in time). `publish_strict` raises the first of them. A
message without a PubAck may or may not be stored: publish it again with the same Nats-Msg-Id
(deduplicated inside the window).

`fits` and `group_msg_id` cut the batch messages of the JetStream hops (mailflow.contracts.messages):
how many items go in one message, and a Nats-Msg-Id derived from the items, so the same items
published again together are dropped.

`publish_until_acked` publishes one message and, while no PubAck comes (its NATS server died, the
stream's leader is being elected in a cluster), publishes it again with the same Nats-Msg-Id, each
attempt waiting a short while, until a PubAck or the overall timeout: a lost PubAck costs one attempt
(1 s), not the whole timeout.

`publish_unacked` is for what may be lost (trace events): no reply subject, so JetStream sends no
PubAck and nobody waits; the messages leave in the client's next socket write. A NATS error is
returned as a count of the messages not sent, never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

log = logging.getLogger(__name__)


# What a publish can meet while a server or a stream leader is away: worth one more try.
TRANSIENT = (
    TimeoutError,  # nats.errors.TimeoutError too: no PubAck in time
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # no stream leader (yet)
    nats.errors.OutboundBufferLimitError,  # disconnected, and the connection keeps no reconnect buffer
    nats.errors.ConnectionReconnectingError,
)


async def publish_until_acked(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    msg_id: str,
    timeout: float,
    attempt: float = 1.0,
    pause: float = 0.2,
) -> PubAck:
    """`js.publish` with Nats-Msg-Id `msg_id`, again after `pause` s while it fails with a TRANSIENT error,
    each attempt waiting at most `attempt` s, until `timeout` s in all; then the last error is raised. A
    JetStream error (the stream refused the message) is raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        try:
            return await js.publish(subject, data, timeout=min(attempt, left), headers={"Nats-Msg-Id": msg_id})
        except TRANSIENT:
            if deadline - loop.time() <= pause:
                raise
        await asyncio.sleep(pause)


def fits(sizes: Sequence[int], max_count: int, max_bytes: int) -> int:
    """How many of the leading items (of these sizes) go in one message: at least one, then while
    both limits hold."""
    n, total = 0, 0
    for size in sizes:
        if n and (n >= max_count or total + size > max_bytes):
            break
        n, total = n + 1, total + size
    return n


def json_bound(body: bytes | None, fields: int) -> int:
    """An item's JSON size for `fits`, without serialising it: its body as base64 (RFC 4648, 4 characters
    per 3 bytes) plus `fields` bytes, the caller's bound for everything else (addresses and the like,
    bounded by smtp-ingress's line limits). Batch limits are half of NATS's max_payload (1 MB): what a
    bound misses still fits."""
    return 4 * ((len(body) + 2) // 3) + fields if body else fields


def group_msg_id(prefix: str, keys: Sequence[str]) -> str:
    """The Nats-Msg-Id of a message carrying the items with these keys: the key itself for one item,
    else `<prefix>/<digest of the keys>`."""
    if len(keys) == 1:
        return keys[0]
    return f"{prefix}/{hashlib.blake2b(chr(10).join(keys).encode(), digest_size=16).hexdigest()}"


class PubAckError(Exception):
    pass


async def publish_unacked(nc: NATS, items: Sequence[Item]) -> int:
    """Publish without asking for PubAcks (best effort). Returns how many could not be handed to NATS."""
    lost = 0
    for subject, payload, headers in items:
        try:
            await nc.publish(subject, payload, headers=headers)
        except Exception:  # disconnected with a full reconnect buffer, or closed: the rest go too
            lost += 1
    return lost


Item = tuple[str, bytes, dict[str, str] | None]  # subject, payload, headers


class BatchPublisher:
    def __init__(self, nc: NATS, timeout: float = 10.0):
        self.nc, self.timeout = nc, timeout
        self._prefix = ""
        self._pending: dict[str, asyncio.Future] = {}
        self._ids = itertools.count()
        self._sub = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                self._prefix = self.nc.new_inbox()
                self._sub = await self.nc.subscribe(self._prefix + ".*", cb=self._on_ack, pending_msgs_limit=1_000_000)

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._pending.pop(msg.subject, None)
        if fut is None or fut.done():
            return
        if not msg.data:  # a status message: 503 no responders (no stream takes the subject)
            status = (msg.headers or {}).get("Status", "") if msg.headers else ""
            fut.set_exception(PubAckError(f"no JetStream stream answered ({status or 'no responders'})"))
            return
        try:
            ack = json.loads(msg.data)
        except ValueError:
            fut.set_exception(PubAckError(f"malformed PubAck {msg.data[:80]!r}"))
            return
        if "error" in ack:
            err = ack["error"]
            fut.set_exception(PubAckError(f"{err.get('code')} {err.get('description')}"))
        else:
            fut.set_result(ack)

    async def publish(self, items: Sequence[Item]) -> list[dict | BaseException]:
        if not items:
            return []
        await self._ensure()
        loop = asyncio.get_running_loop()
        subjects, futs = [], []
        try:
            for subject, payload, headers in items:
                reply = f"{self._prefix}.{next(self._ids)}"
                fut = loop.create_future()
                self._pending[reply] = fut
                subjects.append(reply)
                futs.append(fut)
                await self.nc.publish(subject, payload, reply=reply, headers=headers)
            done, _ = await asyncio.wait(futs, timeout=self.timeout)
        finally:
            for reply in subjects:
                self._pending.pop(reply, None)
        out: list[dict | BaseException] = []
        for fut in futs:
            if fut in done:
                exc = fut.exception()
                out.append(exc if exc is not None else fut.result())
            else:
                fut.cancel()
                out.append(TimeoutError("no PubAck in time"))
        return out

    async def publish_strict(self, items: Sequence[Item]) -> list[dict]:
        results = await self.publish(items)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]
