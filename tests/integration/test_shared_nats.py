"""The shared NATS plumbing against a real nats-server: streams, bodies, the worker loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from mailflow.bodies import BodyMissing, JetStreamBodies
from mailflow.contracts import subjects
from mailflow.contracts.messages import DeadLetter, DeliveryResult, DeliveryResults
from mailflow.contracts.streams import ensure_streams
from mailflow.worker import Done, Fail, Retry, Worker


async def test_streams_apply_twice(js):
    await ensure_streams(js)  # the fixture applied them once already
    names = {s.config.name for s in await js.streams_info()}
    assert {"BODY", "MAIL", "JOBS", "RESULTS", "DEAD", "TRACE"} <= names


@pytest.mark.parametrize("size", [0, 4096, 2 * 1024 * 1024 + 17])
async def test_body_roundtrip_and_delete(js, size):
    bodies = JetStreamBodies(js, chunk_size=512 * 1024)
    data = bytes(i % 251 for i in range(size))
    ref = await bodies.put("Q1", data)
    assert await bodies.get(ref) == data
    await bodies.delete(ref)
    with pytest.raises(BodyMissing):
        await bodies.get(ref)


async def test_body_republish_is_deduplicated(js):
    bodies = JetStreamBodies(js)
    await bodies.put("Q2", b"hello")
    await bodies.put("Q2", b"hello")
    info = await js.stream_info("BODY")
    assert info.state.messages == 1


class Collect(Worker[DeliveryResult]):
    stream, durable, model = "RESULTS", "queue-results", DeliveryResult

    def __init__(self, *a, outcomes):
        super().__init__(*a)
        self.outcomes = outcomes
        self.seen: list[tuple[str, int]] = []

    async def handle(self, msg, attempt):
        self.seen.append((msg.queue_id, attempt))
        return self.outcomes.pop(0) if self.outcomes else Done()


async def test_worker_retry_then_done_and_poison_to_dead(js):
    nc = js._nc
    result = DeliveryResult(queue_id="Q3", rcpt="a@b.test", attempt=1, outcome="delivered", status="2.0.0")
    await js.publish(subjects.DELIVERY_RESULT, result.to_bytes())
    await js.publish(subjects.DELIVERY_RESULT, b"{not json")
    w = Collect(nc, js, "test", outcomes=[Retry(0.05)])
    await w.run_until_idle(idle=0.5)
    assert w.seen == [("Q3", 1), ("Q3", 2)]
    dead = await js.pull_subscribe(subjects.MAIL_DEAD, durable="t", stream="DEAD")
    (m,) = await dead.fetch(1, timeout=2)
    letter = DeadLetter.from_bytes(m.data)
    assert letter.payload == b"{not json" and "undecodable" in letter.reason
    info = await js.stream_info("RESULTS")
    assert info.state.messages == 0  # work queue: acked and termed messages are gone


async def test_worker_fail_goes_to_dead_letter(js):
    nc = js._nc
    result = DeliveryResult(queue_id="Q4", rcpt="a@b.test", attempt=1, outcome="bounced", status="5.1.1")
    await js.publish(subjects.DELIVERY_RESULT, result.to_bytes())
    w = Collect(nc, js, "test", outcomes=[Fail("cannot ever work")])
    await w.run_until_idle()
    dead = await js.pull_subscribe(subjects.MAIL_DEAD, durable="t2", stream="DEAD")
    (m,) = await dead.fetch(1, timeout=2)
    assert DeadLetter.from_bytes(m.data).reason == "cannot ever work"


async def test_worker_stops_on_event(js):
    w = Collect(js._nc, js, "test", outcomes=[])
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 3)


async def test_puller_hands_over_a_message_at_once_after_idle_rounds(js):
    """A message that arrives while a fetch waits comes back at once, not at the end of the wait, also
    after many empty rounds whose ends (408s) could be taken for a later request's answer."""
    from mailflow.pull import Puller

    nc = js._nc
    puller = await Puller(nc, "RESULTS", "queue-results").start()
    for _ in range(5):
        assert await puller.fetch(16, wait=0.05) == []
    assert await puller.fetch(16, wait=None) == []  # nothing there, no waiting
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.ensure_future(puller.fetch(16, wait=5.0))
    await asyncio.sleep(0.2)
    result = DeliveryResult(queue_id="Q9", rcpt="a@b.test", attempt=1, outcome="delivered", status="2.0.0")
    await js.publish(subjects.DELIVERY_RESULT, result.to_bytes())
    msgs = await fetch
    assert len(msgs) == 1 and DeliveryResult.from_bytes(msgs[0].data).queue_id == "Q9"
    assert loop.time() - started < 2.0  # the wait was 5 s
    await msgs[0].ack()
    await puller.stop()


async def test_puller_says_why_a_consumer_cannot_be_pulled(js):
    from mailflow.pull import Puller, PullRefused

    puller = await Puller(js._nc, "RESULTS", "no-such-consumer").start()
    with pytest.raises(PullRefused):
        await puller.fetch(1, wait=0.5)
    await puller.stop()


# --- poison messages end in DEAD --------------------------------------------------------------


class Batches(Worker[DeliveryResult]):
    """Handles a fetch in one go, like the queue's and delivery's workers; a result for queue id
    "POISON" makes the whole batch raise."""

    stream, durable, model = "RESULTS", "queue-results", DeliveryResult
    retry_first, retry_cap = 0.01, 0.02

    def __init__(self, *a):
        super().__init__(*a)
        self.calls: list[list[tuple[str, int]]] = []

    async def handle_batch(self, items):
        self.calls.append([(r.queue_id, n) for r, n in items])
        if any(r.queue_id == "POISON" for r, _ in items):
            raise RuntimeError("cannot handle POISON")
        return [Done() for _ in items]


async def dead_letters(js, n: int, durable: str = "t") -> list[DeadLetter]:
    sub = await js.pull_subscribe(subjects.MAIL_DEAD, durable=durable, stream="DEAD")
    return [DeadLetter.from_bytes(m.data) for m in await sub.fetch(n, timeout=2)]


def result_of(qid: str) -> bytes:
    return DeliveryResult(queue_id=qid, rcpt="a@b.test", attempt=1, outcome="delivered", status="2.0.0", at=datetime(2026, 1, 1, tzinfo=UTC)).to_bytes()


async def test_a_failing_batch_is_handled_message_by_message_and_the_poison_ends_in_dead(js):
    from mailflow.contracts.streams import MAX_ATTEMPTS

    for qid in ("Q1", "Q2", "POISON", "Q3"):
        await js.publish(subjects.DELIVERY_RESULT, result_of(qid), headers={"Nats-Msg-Id": qid})
    w = Batches(js._nc, js, "test")
    await w.run_until_idle()
    # the batch failed, then each alone: the others are done at their first delivery
    assert w.calls[0] == [("Q1", 1), ("Q2", 1), ("POISON", 1), ("Q3", 1)]
    assert sorted(c[0] for c in w.calls[1:5]) == [("POISON", 1), ("Q1", 1), ("Q2", 1), ("Q3", 1)]
    assert [c for c in w.calls[5:]] == [[("POISON", n)] for n in range(2, MAX_ATTEMPTS + 1)]
    (letter,) = await dead_letters(js, 1)
    assert letter.subject == subjects.DELIVERY_RESULT and letter.service == "test" and letter.delivered == MAX_ATTEMPTS
    assert letter.payload == result_of("POISON") and letter.headers["Nats-Msg-Id"] == "POISON"
    assert letter.reason.startswith(f"failed {MAX_ATTEMPTS} attempts; the last: RuntimeError: cannot handle POISON (ref ")
    assert "Traceback" not in letter.reason
    assert (await js.stream_info("RESULTS")).state.messages == 0  # nothing stays behind in the work queue


async def test_a_message_whose_last_attempt_never_settled_goes_to_dead_unhandled(js):
    """The process died during each attempt (here: nak'ed by hand, as a crash's redelivery counts): the
    delivery kept in reserve moves it to DEAD without trying it again."""
    from mailflow.contracts.streams import MAX_ATTEMPTS

    await js.publish(subjects.DELIVERY_RESULT, result_of("CRASHER"))
    sub = await js.pull_subscribe_bind(durable="queue-results", stream="RESULTS")
    for _ in range(MAX_ATTEMPTS):
        (m,) = await sub.fetch(1, timeout=2)
        await m.nak()
    w = Batches(js._nc, js, "test")
    assert await w.run_until_idle() == 1
    assert w.calls == []
    (letter,) = await dead_letters(js, 1)
    assert letter.reason.startswith(f"no outcome after {MAX_ATTEMPTS} attempts") and letter.delivered == MAX_ATTEMPTS + 1
    assert (await js.stream_info("RESULTS")).state.messages == 0


async def test_streams_bound_the_deliveries_of_a_durable_made_before(js):
    """A consumer made with unbounded max_deliver (as before poison messages ended in DEAD) is brought up
    to date; applying again changes nothing."""
    from nats.js.api import ConsumerConfig

    from mailflow.contracts.streams import MAX_ATTEMPTS, consumer_configs

    await js.delete_consumer("RESULTS", "queue-results")
    await js.add_consumer("RESULTS", ConsumerConfig(durable_name="queue-results", filter_subject=subjects.DELIVERY_RESULT, ack_policy="explicit", max_deliver=-1))
    await ensure_streams(js)
    await ensure_streams(js)
    assert (await js.consumer_info("RESULTS", "queue-results")).config.max_deliver == MAX_ATTEMPTS + 1
    declared = {(stream, c.durable_name, c.filter_subject) for stream, c in consumer_configs()}
    assert declared == {("MAIL", "queue", "mail.queued"), ("JOBS", "delivery", "delivery.job"), ("RESULTS", "queue-results", "delivery.result")}
    for stream, durable, _ in declared:
        assert (await js.consumer_info(stream, durable)).config.max_deliver == MAX_ATTEMPTS + 1


class ResultBatches(Batches):
    """Messages of many results, like the queue's results worker."""

    model, items = DeliveryResults, "results"

    async def handle_batch(self, items):
        self.calls.append([(r.queue_id, n) for b, n in items for r in b.results])
        if any(r.queue_id == "POISON" for b, _ in items for r in b.results):
            raise RuntimeError("cannot handle POISON")
        return [Done() for _ in items]


async def test_a_message_of_many_items_that_fails_alone_is_split_and_only_the_poison_ends_in_dead(js):
    results = [DeliveryResult.from_bytes(result_of(q)) for q in ("Q1", "POISON", "Q2")]
    await js.publish(subjects.DELIVERY_RESULT, DeliveryResults(results=results).to_bytes(), headers={"Nats-Msg-Id": "three"})
    w = ResultBatches(js._nc, js, "test")
    await w.run_until_idle()
    from mailflow.contracts.streams import MAX_ATTEMPTS

    assert w.calls[0] == [("Q1", 1), ("POISON", 1), ("Q2", 1)]  # alone already: split into three messages
    singles = [c for c in w.calls[1:] if len(c) == 1]
    assert singles.count([("Q1", 1)]) == 1 and singles.count([("Q2", 1)]) == 1  # done at once
    assert [c for c in singles if c[0][0] == "POISON"] == [[("POISON", n)] for n in range(1, MAX_ATTEMPTS + 1)]
    (letter,) = await dead_letters(js, 1)
    assert [r.queue_id for r in DeliveryResults.from_bytes(letter.payload).results] == ["POISON"]
    assert (await js.stream_info("RESULTS")).state.messages == 0
