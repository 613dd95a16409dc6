"""The JetStream worker loop every consuming service uses: fetch -> decode -> handle -> ack | nak | term.

A subclass names its stream, durable consumer and payload model and implements `handle` (or
`handle_batch`, to do one database transaction for many messages). Outcomes:
  Done()            -> ack: the effect is durable.
  Retry(delay)      -> nak with a delay: JetStream redelivers the same message later.
  Fail(reason)      -> the message can never succeed: it goes to `mail.dead` with the reason, then term.
A payload that does not decode is a Fail. An exception from `handle` is unclassified, hence temporary:
it is logged with a ref and the message is nak'ed with backoff. Many processes may run the same worker
on the same durable consumer; JetStream gives each message to one of them at a time.
On stop, intake stops, the batch in hand is finished and acknowledged, and `run` returns.
A worker whose consumer is made by its reader, not by `ensure_streams`, names it in `own_consumer`;
`carried` handles messages that each carry many items (the `.v2` batch subjects).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from mailflow import ids
from mailflow.contracts import subjects
from mailflow.contracts.messages import DeadLetter
from mailflow.contracts.streams import ensure_consumer
from mailflow.pull import Puller

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

HANDLED = Counter(
    "mailflow_worker_messages_total", "Messages handled by a worker, by outcome", ["worker", "outcome"]
)
HANDLE_SECONDS = Histogram(
    "mailflow_worker_handle_duration_seconds",
    "Time to handle one message",
    ["worker"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class Fail:
    reason: str


Outcome = Done | Retry | Fail


async def carried(
    items: list[tuple[Any, int]],
    parts: Callable[[Any], Sequence[Any]],
    handle: Callable[[list[tuple[Any, int]]], Awaitable[list[Outcome]]],
) -> list[Outcome]:
    """Messages that carry many items each: `handle` gets all their items at once (each with its
    message's delivery count); a message is Done when all its items are, else it takes the first
    other outcome among them (and comes again whole: handlers are idempotent)."""
    outcomes = await handle([(x, n) for m, n in items for x in parts(m)])
    out: list[Outcome] = []
    k = 0
    for m, _ in items:
        size = len(parts(m))
        out.append(next((o for o in outcomes[k : k + size] if not isinstance(o, Done)), Done()))
        k += size
    return out


def backoff(attempt: int, first: float = 1.0, cap: float = 60.0) -> float:
    """Redelivery delay for infrastructure trouble (not the queue's mail retry schedule)."""
    return min(cap, first * 2 ** max(0, attempt - 1))


class Worker(Generic[T]):
    stream: ClassVar[str]
    durable: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    batch: ClassVar[int] = 128
    concurrency: ClassVar[int] = 128
    fetch_timeout: ClassVar[float] = 1.0
    heartbeat: ClassVar[float] = 15.0  # in_progress() for messages handled longer than this
    own_consumer: ClassVar[Callable[[], ConsumerConfig] | None] = None  # created at bind, on `stream`

    def __init__(self, nc: NATS, js: JetStreamContext, service: str):
        self.nc, self.js, self.service = nc, js, service
        self.name = f"{service}/{self.durable}"
        self._sub: Puller | None = None
        self._sem = asyncio.Semaphore(self.concurrency)
        # labelled metric children, looked up once (labels() per message costs ~10% of a fast worker)
        self._handled = {o: HANDLED.labels(self.name, o) for o in ("done", "retry", "dead")}
        self._handle_seconds = HANDLE_SECONDS.labels(self.name)

    # --- to implement -------------------------------------------------------------------------

    async def handle(self, msg: T, attempt: int) -> Outcome:
        raise NotImplementedError

    async def handle_batch(self, items: list[tuple[T, int]]) -> list[Outcome]:
        """Default: `handle` each message concurrently. Override to batch work across messages."""

        async def one(item: tuple[T, int]) -> Outcome:
            async with self._sem:
                return await self._guarded(item[0], item[1])

        return list(await asyncio.gather(*(one(it) for it in items)))

    # --- the loop -----------------------------------------------------------------------------

    async def _guarded(self, payload: T, attempt: int) -> Outcome:
        try:
            return await self.handle(payload, attempt)
        except Exception:
            ref = ids.ref()
            log.exception("handler failed; will retry", extra={"ref": ref, "worker": self.name})
            return Retry(backoff(attempt))

    async def bind(self) -> None:
        if self._sub is None:
            if self.own_consumer is not None:
                await ensure_consumer(self.js, self.stream, self.own_consumer())
            await self.js.consumer_info(self.stream, self.durable)  # raises NotFoundError: fail at start
            self._sub = await Puller(self.nc, self.stream, self.durable).start()

    async def run(self, stop: asyncio.Event) -> None:
        await self.bind()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # NATS away: wait and try again
                if stop.is_set():
                    break
                log.warning("fetch failed: %s", exc, extra={"worker": self.name})
                await asyncio.sleep(0.5)

    async def run_until_idle(self, idle: float = 0.3) -> int:
        """For tests: handle messages until none arrives for `idle` seconds. Returns how many."""
        await self.bind()
        total = 0
        while (n := await self.poll_once(timeout=idle)) > 0:
            total += n
        return total

    async def poll_once(self, timeout: float | None = None) -> int:
        msgs = await self._sub.fetch(self.batch, wait=timeout or self.fetch_timeout)
        if msgs:
            await self.process(msgs)
        return len(msgs)

    async def process(self, msgs: list[Msg]) -> None:
        items: list[tuple[T, int]] = []
        live: list[Msg] = []
        for m in msgs:
            try:
                payload = self.model.model_validate_json(m.data)
            except ValidationError as exc:
                await self._dead(m, f"undecodable payload: {exc.errors(include_url=False)[:3]}")
                continue
            items.append((payload, m.metadata.num_delivered))
            live.append(m)
        if not items:
            return
        started = time.perf_counter()
        ticker = asyncio.create_task(self._keep_alive(live))
        try:
            outcomes = await self.handle_batch(items)
        finally:
            ticker.cancel()
        per = (time.perf_counter() - started) / len(items)
        for m, outcome in zip(live, outcomes, strict=True):
            self._handle_seconds.observe(per)
            await self._settle(m, outcome)

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for m in msgs:
                try:
                    await m.in_progress()
                except Exception:
                    pass

    async def _settle(self, m: Msg, outcome: Outcome) -> None:
        try:
            match outcome:
                case Done():
                    await m.ack()
                    self._handled["done"].inc()
                case Retry(delay=delay):
                    await m.nak(delay=delay)
                    self._handled["retry"].inc()
                case Fail(reason=reason):
                    await self._dead(m, reason)
        except Exception as exc:  # the ack is lost: JetStream redelivers, handlers are idempotent
            log.warning("could not settle message: %s", exc, extra={"worker": self.name})

    async def _dead(self, m: Msg, reason: str) -> None:
        letter = DeadLetter(
            subject=m.subject,
            service=self.service,
            reason=reason,
            payload=m.data,
            headers={k: v for k, v in (m.headers or {}).items()},
        )
        await self.js.publish(subjects.MAIL_DEAD, letter.to_bytes())
        await m.term()
        self._handled["dead"].inc()
        log.error("message sent to %s: %s", subjects.MAIL_DEAD, reason, extra={"worker": self.name})
