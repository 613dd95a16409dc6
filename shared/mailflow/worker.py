"""The JetStream worker loop every consuming service uses: fetch -> decode -> handle -> ack | nak | dead.

A subclass names its durable consumer (`streams.py`) and payload model and implements `handle` (or
`handle_batch`, to do one database transaction for many messages). Outcomes:
  Done()                -> ack: the effect is durable.
  Retry(delay, reason)  -> nak with a delay: JetStream redelivers the same message later.
  Fail(reason)          -> the message can never succeed: it goes to `mail.dead` with the reason, then term.
A payload that does not decode is a Fail. An exception from the handler is unclassified, hence
temporary: its traceback is logged under a ref and the message is nak'ed with backoff (1, 2, 4 ... 60 s).
When a batch raises, each of its messages is handled again alone at once; a message that still fails
and carries several items (`items`: a group of envelopes, of jobs, of results) is split: each item is
published again as a message of its own and the original acknowledged. So an item that fails for
itself holds up no other, and ends in DEAD alone.
Poison messages end: after `streams.MAX_ATTEMPTS` attempts a message that still fails goes to DEAD
with the last reason (the exception's text and ref, never a traceback) instead of being nak'ed again.
The consumer's max_deliver keeps one delivery in reserve: a message whose last attempt never settled
(the process died) comes once more and goes to DEAD without another attempt, so nothing stays behind
in a work queue that JetStream no longer redelivers. If DEAD cannot be written, the message is nak'ed.
Many processes may run the same worker on the same durable consumer; JetStream gives each message to
one of them at a time. On stop, intake stops, the batch in hand is finished and settled, and `run` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from mailflow import ids
from mailflow.contracts import subjects
from mailflow.contracts.messages import DeadLetter
from mailflow.contracts.streams import attempts
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
    reason: str = ""  # what went wrong, for DEAD should this have been the last attempt


@dataclass(frozen=True)
class Fail:
    reason: str


Outcome = Done | Retry | Fail


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
    items: ClassVar[str | None] = None  # the payload's list field, when a message carries many items
    retry_first: float = 1.0  # backoff after a failed attempt: retry_first, doubling, at most retry_cap
    retry_cap: float = 60.0

    def __init__(self, nc: NATS, js: JetStreamContext, service: str):
        self.nc, self.js, self.service = nc, js, service
        self.name = f"{service}/{self.durable}"
        self._sub: Puller | None = None
        self.attempts = 0  # from the consumer's max_deliver at bind (streams.MAX_ATTEMPTS); 0: unbounded
        self._sem = asyncio.Semaphore(self.concurrency)
        # labelled metric children, looked up once (labels() per message costs ~10% of a fast worker)
        self._handled = {o: HANDLED.labels(self.name, o) for o in ("done", "retry", "split", "dead")}
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
        except Exception as exc:
            return self._failed(exc, attempt)

    def _failed(self, exc: Exception, attempt: int) -> Retry:
        """An unclassified exception (call it in the `except` block): temporary. The traceback goes to
        the log under a ref; the reason (for DEAD, should this be the last attempt) names the ref."""
        ref = ids.ref()
        log.exception("handler failed, ref %s; attempt %d", ref, attempt, extra={"ref": ref, "worker": self.name})
        return Retry(backoff(attempt, self.retry_first, self.retry_cap), f"{type(exc).__name__}: {exc}"[:500] + f" (ref {ref})")

    async def _outcomes(self, items: list[tuple[T, int]]) -> list[Outcome]:
        """`handle_batch`; if it raises, each message alone, so that one bad message fails by itself."""
        try:
            return await self.handle_batch(items)
        except Exception as exc:
            if len(items) == 1:
                return [self._failed(exc, items[0][1])]
            log.warning("a batch of %d failed (%s: %s): each message alone", len(items), type(exc).__name__, exc, extra={"worker": self.name})
        return [o for one in await asyncio.gather(*(self._outcomes([it]) for it in items)) for o in one]

    async def bind(self) -> None:
        if self._sub is None:
            info = await self.js.consumer_info(self.stream, self.durable)  # raises NotFoundError: fail at start
            self.attempts = attempts(info.config.max_deliver)
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
            delivered = m.metadata.num_delivered
            if self.attempts and delivered > self.attempts:
                await self._dead(m, f"no outcome after {self.attempts} attempts (the worker stopped during each)", delivered)
                continue
            try:
                payload = self.model.model_validate_json(m.data)
            except ValidationError as exc:
                await self._dead(m, f"undecodable payload: {exc.errors(include_url=False)[:3]}", delivered)
                continue
            items.append((payload, delivered))
            live.append(m)
        if not items:
            return
        started = time.perf_counter()
        ticker = asyncio.create_task(self._keep_alive(live))
        try:
            outcomes = await self._outcomes(items)
        finally:
            ticker.cancel()
        per = (time.perf_counter() - started) / len(items)
        for m, (payload, delivered), outcome in zip(live, items, outcomes, strict=True):
            self._handle_seconds.observe(per)
            if isinstance(outcome, Retry) and (parts := self._parts(payload)) and await self._split(m, parts):
                continue
            await self._settle(m, delivered, outcome)

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for m in msgs:
                try:
                    await m.in_progress()
                except Exception:
                    pass

    async def _settle(self, m: Msg, delivered: int, outcome: Outcome) -> None:
        try:
            match outcome:
                case Done():
                    await m.ack()
                    self._handled["done"].inc()
                case Retry(reason=reason) if self.attempts and delivered >= self.attempts:
                    await self._dead(m, f"failed {delivered} attempts; the last: {reason or 'retry asked for'}", delivered)
                case Retry(delay=delay):
                    await m.nak(delay=delay)
                    self._handled["retry"].inc()
                case Fail(reason=reason):
                    await self._dead(m, reason, delivered)
        except Exception as exc:  # the ack is lost: JetStream redelivers, handlers are idempotent
            log.warning("could not settle message: %s", exc, extra={"worker": self.name})

    def _parts(self, payload: T) -> list[BaseModel]:
        """A payload of several items as payloads of one item each; [] if it has one."""
        items = getattr(payload, self.items) if self.items else []
        return [payload.model_copy(update={self.items: [item]}) for item in items] if len(items) > 1 else []

    async def _split(self, m: Msg, parts: list[BaseModel]) -> bool:
        """Publish each part as a message of its own on the same subject, then ack the original. Their
        Nats-Msg-Ids name the original's place and the part, so splitting it again publishes nothing
        new. False (and nothing acknowledged) if a publish failed."""
        where = f"{m.metadata.stream}/{m.metadata.sequence.stream}"
        headers = {k: v for k, v in (m.headers or {}).items() if not k.lower().startswith("nats-")}
        try:
            for n, part in enumerate(parts):
                await self.js.publish(m.subject, part.to_bytes(), headers={**headers, "Nats-Msg-Id": f"split/{where}/{n}"})
            await m.ack()
        except Exception as exc:
            log.warning("could not split message %s: %s", where, exc, extra={"worker": self.name})
            return False
        self._handled["split"].inc()
        log.warning("message %s failed alone: split into %d messages of one item", where, len(parts), extra={"worker": self.name})
        return True

    async def _dead(self, m: Msg, reason: str, delivered: int) -> None:
        """To DEAD, then term. Nats-Msg-Id: the message's place in its stream, so a letter published
        again (the term was lost and the message came back) is dropped as a duplicate."""
        letter = DeadLetter(
            subject=m.subject,
            service=self.service,
            reason=reason,
            payload=m.data,
            headers={k: v for k, v in (m.headers or {}).items()},
            delivered=delivered,
        )
        msg_id = f"{m.metadata.stream}/{m.metadata.sequence.stream}"
        try:
            await self.js.publish(subjects.MAIL_DEAD, letter.to_bytes(), headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # not set aside: it comes again (unless that was its last delivery)
            log.error("could not write to DEAD (%s); message %s stays", exc, msg_id, extra={"worker": self.name})
            await m.nak(delay=backoff(delivered, self.retry_first, self.retry_cap))
            return
        await m.term()
        self._handled["dead"].inc()
        log.error("message %s sent to %s: %s", msg_id, subjects.MAIL_DEAD, reason, extra={"worker": self.name})
