"""The queue against a real nats-server and real databases: intake, results, retries, DSNs, bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from mailflow.bodies import BodyMissing
from mailflow.contracts import subjects
from mailflow.contracts.messages import DeliveryResult, DeliveryResults, QueuedMessage, Recipient
from mailflow_queue import db
from tests.support import await_for

BODY = b"From: a@daum.test\r\nTo: z@naver.test\r\nSubject: hello\r\n\r\nHi Z.\r\n"


async def submit(parts, qid, rcpts, mail_from="a@daum.test", **kw):
    ref = await parts.bodies.put(qid, BODY)
    msg = QueuedMessage(
        queue_id=qid,
        trace_id=f"trace-{qid}",
        mail_from=mail_from,
        rcpt_to=[r if isinstance(r, Recipient) else Recipient(address=r) for r in rcpts],
        body_ref=ref,
        size=len(BODY),
        received_at=datetime.fromtimestamp(parts.clock.now, UTC),
        **kw,
    )
    await parts.js.publish(subjects.MAIL_QUEUED, msg.to_bytes(), headers={"Nats-Msg-Id": qid})
    return msg


async def answer(parts, qid, rcpt, outcome, status, attempt=1, diag=""):
    r = DeliveryResult(queue_id=qid, rcpt=rcpt, attempt=attempt, outcome=outcome, status=status, diagnostic=diag)
    await parts.js.publish(subjects.DELIVERY_RESULT, r.to_bytes())


def result(qid, rcpt, outcome, status, attempt=1):
    return DeliveryResult(queue_id=qid, rcpt=rcpt, attempt=attempt, outcome=outcome, status=status)


async def answer_batch(parts, *results):
    """What a delivery batch sends back: its results in one DeliveryResults message (delivery.result.v2)."""
    await parts.js.publish(subjects.DELIVERY_RESULTS, DeliveryResults(results=list(results)).to_bytes())


def rows(parts, qid):
    def q(s):
        return {r.address: (r.state, r.attempts, r.last_status) for r in s.scalars(sa.select(db.Recipient).where(db.Recipient.queue_id == qid))}

    return parts.db.call(q)


def message(parts, qid):
    return parts.db.call(lambda s: s.get(db.Message, qid))


async def test_intake_records_and_publishes_one_job_per_recipient(parts):
    msg = await submit(parts, "Q1", ["z@naver.test", "Y@naver.test", "y@NAVER.test"])
    assert await parts.intake.run_until_idle() == 1
    assert rows(parts, "Q1") == {"z@naver.test": ("inflight", 1, ""), "Y@naver.test": ("inflight", 1, "")}
    jobs = await parts.jobs(expect=2)
    assert {msg_id for _, msg_id in jobs} == {"Q1/z@naver.test/1", "Q1/y@naver.test/1"}
    job = jobs[0][0]
    assert job.body_ref == msg.body_ref and job.trace_id == "trace-Q1" and job.attempt == 1
    # the same message again (a redelivery after a crash): recorded once, jobs deduplicated by JetStream
    await parts.js.publish(subjects.MAIL_QUEUED, msg.to_bytes())
    assert await parts.intake.run_until_idle() == 1
    await parts.jobs(expect=0)
    assert len(rows(parts, "Q1")) == 2

    async def one_trace():
        return (await parts.js.stream_info("TRACE", subjects_filter=subjects.trace("Q1"))).state.messages == 1

    await await_for(one_trace, timeout=5, what="the queue's trace event")


async def test_intake_does_not_wait_for_trace_events(parts):
    """Trace events are best effort (published without a PubAck): without a TRACE stream to take them,
    intake still records the message, publishes its job and acknowledges it."""
    await parts.js.delete_stream("TRACE")
    await submit(parts, "QT", ["z@naver.test"])
    assert await parts.intake.run_until_idle() == 1
    assert rows(parts, "QT") == {"z@naver.test": ("inflight", 1, "")}
    await parts.jobs(expect=1)
    assert (await parts.js.stream_info("MAIL")).state.messages == 0  # acknowledged, not retried


async def test_results_retry_dsn_and_body_deletion(parts):
    await submit(parts, "Q2", [Recipient(address="ok@naver.test"), Recipient(address="bad@naver.test", orcpt="rfc822;Bad@naver.test"), "later@naver.test"], envid="E-42")
    await parts.intake.run_until_idle()
    await parts.jobs(expect=3)
    await answer(parts, "Q2", "ok@naver.test", "delivered", "2.0.0")
    await answer(parts, "Q2", "bad@naver.test", "bounced", "5.1.1", diag="550 5.1.1 <bad@naver.test>: no such user")
    await answer(parts, "Q2", "later@naver.test", "deferred", "4.4.1", diag="connection refused")
    await parts.results.run_until_idle()
    assert rows(parts, "Q2") == {
        "ok@naver.test": ("delivered", 1, "2.0.0"),
        "bad@naver.test": ("bounced", 1, "5.1.1"),
        "later@naver.test": ("deferred", 1, "4.4.1"),
    }
    await parts.scheduler.tick()  # sends the failure DSN; nothing is due yet
    await parts.jobs(expect=0)
    assert await parts.intake.run_until_idle() == 1  # the DSN comes back through mail.queued
    (dsn,) = parts.db.call(lambda s: list(s.scalars(sa.select(db.Message).where(db.Message.mail_from == ""))))
    assert rows(parts, dsn.queue_id) == {"a@daum.test": ("inflight", 1, "")}
    assert dsn.body_ref == f"inline:{dsn.queue_id}:{dsn.size}"  # a DSN is small: its body travels inline
    raw = parts.db.call(lambda s: s.get(db.Body, dsn.queue_id).data)
    assert b"Final-Recipient: rfc822; bad@naver.test" in raw and b"Original-Envelope-Id: E-42" in raw
    assert b"Original-Recipient: rfc822;Bad@naver.test" in raw and b"ok@naver.test" not in raw.split(b"message/rfc822")[0]
    assert b"Hi Z." in raw  # RET not given, small message: returned whole
    (job,) = [j for j, _ in await parts.jobs(expect=1)]
    assert job.mail_from == "" and job.rcpt.address == "a@daum.test" and job.body == raw
    # the body stays while a recipient is still queued; the retry comes ~1 minute later
    assert await parts.bodies.get(message(parts, "Q2").body_ref) == BODY
    parts.clock.now += 59
    await parts.scheduler.tick()
    await parts.jobs(expect=0)
    parts.clock.now += 2
    await parts.scheduler.tick()
    ((job, msg_id),) = await parts.jobs(expect=1)
    assert job.attempt == 2 and msg_id == "Q2/later@naver.test/2"
    await answer(parts, "Q2", "later@naver.test", "delivered", "2.0.0", attempt=2)
    await parts.results.run_until_idle()
    await parts.scheduler.tick()
    m = message(parts, "Q2")
    assert m.done_at is not None and m.body_deleted
    with pytest.raises(BodyMissing):
        await parts.bodies.get(m.body_ref)


async def test_stale_and_repeated_results_change_nothing(parts):
    await submit(parts, "Q3", ["z@naver.test"])
    await parts.intake.run_until_idle()
    await answer(parts, "Q3", "z@naver.test", "delivered", "2.0.0")
    await answer(parts, "Q3", "z@naver.test", "deferred", "4.0.0")  # a late answer of a redelivered job
    await answer(parts, "Q3", "nobody@naver.test", "bounced", "5.1.1")
    await answer(parts, "GONE", "z@naver.test", "bounced", "5.1.1")
    await parts.results.run_until_idle()
    assert rows(parts, "Q3") == {"z@naver.test": ("delivered", 1, "2.0.0")}
    await parts.scheduler.tick()
    assert parts.db.call(lambda s: s.scalar(sa.select(sa.func.count()).select_from(db.Notice))) == 0


async def test_expiry_bounces_and_null_sender_gets_no_dsn(parts):
    await submit(parts, "Q4", ["z@naver.test"])
    await submit(parts, "Q5", ["z@naver.test"], mail_from="")
    await parts.intake.run_until_idle()
    parts.clock.now += 5 * 86400 + 1
    await answer(parts, "Q4", "z@naver.test", "deferred", "4.4.1", diag="timeout")
    await answer(parts, "Q5", "z@naver.test", "deferred", "4.4.1", diag="timeout")
    await parts.results.run_until_idle()
    assert rows(parts, "Q4") == {"z@naver.test": ("bounced", 1, "4.4.7")}
    assert rows(parts, "Q5") == {"z@naver.test": ("bounced", 1, "4.4.7")}
    notices = parts.db.call(lambda s: [(n.queue_id, n.kind) for n in s.scalars(sa.select(db.Notice))])
    assert notices == [("Q4", "failure")]


async def test_delay_notice_once_and_success_notice_on_request(parts):
    await submit(parts, "Q6", [Recipient(address="z@naver.test"), Recipient(address="x@naver.test", notify=["SUCCESS"])])
    await parts.intake.run_until_idle()
    await answer(parts, "Q6", "z@naver.test", "deferred", "4.4.1", diag="connection refused")
    await answer(parts, "Q6", "x@naver.test", "delivered", "2.0.0")
    await parts.results.run_until_idle()
    parts.clock.now += 4 * 3600 + 1
    await parts.scheduler.tick()
    await parts.scheduler.tick()
    kinds = parts.db.call(lambda s: sorted((n.kind, n.sent) for n in s.scalars(sa.select(db.Notice))))
    assert kinds == [("delay", True), ("success", True)]


async def test_a_result_that_overtakes_its_message_is_applied_once_recorded(parts):
    import asyncio

    parts.results.unknown_tries = 40  # 2 s of asking again, as in production
    await answer(parts, "Q7", "z@naver.test", "delivered", "2.0.0")  # before intake committed Q7
    stop = asyncio.Event()
    task = asyncio.create_task(parts.results.run(stop))
    try:
        await asyncio.sleep(0.3)  # the result is asked for again and again meanwhile
        await submit(parts, "Q7", ["z@naver.test"])
        await parts.intake.run_until_idle()

        async def delivered():
            return rows(parts, "Q7") == {"z@naver.test": ("delivered", 1, "2.0.0")}

        from tests.support import await_for

        await await_for(delivered, timeout=5, what="result applied after the commit")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_retries_whose_publish_failed_are_due_again_soon(parts):
    await submit(parts, "Q8", ["z@naver.test"])
    await parts.intake.run_until_idle()
    await answer(parts, "Q8", "z@naver.test", "deferred", "4.4.1")
    await parts.results.run_until_idle()
    await parts.jobs(expect=1)
    parts.clock.now += 61

    class Down:
        async def publish(self, jobs, traces=()):
            raise TimeoutError("NATS away")

    real, parts.scheduler.outbox = parts.scheduler.outbox, Down()
    with pytest.raises(TimeoutError):
        await parts.scheduler.tick()
    assert rows(parts, "Q8") == {"z@naver.test": ("inflight", 2, "4.4.1")}
    parts.scheduler.outbox = real
    parts.clock.now += 11  # not the 30 minutes of the in-flight timeout
    await parts.scheduler.tick()
    ((job, msg_id),) = await parts.jobs(expect=1)
    assert job.attempt == 2 and msg_id == "Q8/z@naver.test/2"


# --- bodies that travel inline (mailflow.bodies.INLINE_MAX) ------------------------------------


async def submit_inline(parts, qid, rcpts, mail_from="a@daum.test", body=BODY, **kw):
    msg = QueuedMessage(
        queue_id=qid,
        trace_id=f"trace-{qid}",
        mail_from=mail_from,
        rcpt_to=[r if isinstance(r, Recipient) else Recipient(address=r) for r in rcpts],
        body_ref=f"inline:{qid}:{len(body)}",
        size=len(body),
        body=body,
        received_at=datetime.fromtimestamp(parts.clock.now, UTC),
        **kw,
    )
    await parts.js.publish(subjects.MAIL_QUEUED, msg.to_bytes(), headers={"Nats-Msg-Id": qid})
    return msg


def kept_body(parts, qid):
    return parts.db.call(lambda s: (b.data if (b := s.get(db.Body, qid)) else None))


async def test_an_inline_body_is_kept_until_final_and_goes_with_every_job(parts):
    body = b"Subject: inline\r\n\r\n" + bytes(range(256)) * 4 + b"\r\n"  # 8-bit bytes survive JSON
    msg = await submit_inline(parts, "QI1", ["z@naver.test", "y@naver.test"], body=body)
    assert await parts.intake.run_until_idle() == 1
    assert kept_body(parts, "QI1") == body
    jobs = [j for j, _ in await parts.jobs(expect=2)]
    assert all(j.body == body and j.body_ref == msg.body_ref for j in jobs)
    # the redelivered envelope (a crash before its ack) re-publishes the in-flight jobs, body included
    await parts.js.publish(subjects.MAIL_QUEUED, msg.to_bytes())
    parts.intake.batch = 1
    assert await parts.intake.run_until_idle() == 1
    await answer(parts, "QI1", "z@naver.test", "delivered", "2.0.0")
    await answer(parts, "QI1", "y@naver.test", "deferred", "4.4.1", diag="connection refused")
    await parts.results.run_until_idle()
    assert kept_body(parts, "QI1") == body  # y is still to be tried
    parts.clock.now += 61
    await parts.scheduler.tick()
    ((retry, msg_id),) = await parts.jobs(expect=1)
    assert retry.attempt == 2 and retry.body == body and msg_id == "QI1/y@naver.test/2"
    await answer(parts, "QI1", "y@naver.test", "delivered", "2.0.0", attempt=2)
    await parts.results.run_until_idle()
    # final, no DSN due: the body went in the results transaction itself, no scheduler pass needed
    assert kept_body(parts, "QI1") is None
    m = message(parts, "QI1")
    assert m.done_at is not None and m.body_deleted


async def test_a_failure_dsn_of_an_inline_message_returns_it_and_then_the_body_goes(parts):
    await submit_inline(parts, "QI2", ["bad@naver.test"])
    await parts.intake.run_until_idle()
    await parts.jobs(expect=1)
    await answer(parts, "QI2", "bad@naver.test", "bounced", "5.1.1", diag="550 5.1.1 no such user")
    await parts.results.run_until_idle()
    assert kept_body(parts, "QI2") == BODY  # the DSN is not out yet: it needs the original
    await parts.scheduler.tick()  # sends the DSN, then deletes the body
    assert kept_body(parts, "QI2") is None and message(parts, "QI2").body_deleted
    assert await parts.intake.run_until_idle() == 1
    ((job, _),) = await parts.jobs(expect=1)
    assert job.mail_from == "" and b"Hi Z." in job.body and b"Final-Recipient: rfc822; bad@naver.test" in job.body


async def test_an_operator_delete_takes_the_inline_body_along(parts):
    from mailflow_queue import admin

    await submit_inline(parts, "QI3", ["z@naver.test"])
    await parts.intake.run_until_idle()
    assert parts.db.call(admin.delete, "QI3") == ""  # nothing to purge in stream BODY
    assert kept_body(parts, "QI3") is None and message(parts, "QI3") is None


async def test_a_delivery_batch_of_results_is_one_message_applied_at_once(parts):
    await submit(parts, "QB1", ["a@naver.test", "b@naver.test"])
    await submit(parts, "QB2", ["c@naver.test"])
    await parts.intake.run_until_idle()
    await parts.jobs(expect=3)
    await answer_batch(
        parts,
        result("QB1", "a@naver.test", "delivered", "2.0.0"),
        result("QB1", "b@naver.test", "deferred", "4.4.1"),
        result("QB2", "c@naver.test", "bounced", "5.1.1"),
    )
    assert await parts.result_batches.run_until_idle() == 1
    assert rows(parts, "QB1") == {"a@naver.test": ("delivered", 1, "2.0.0"), "b@naver.test": ("deferred", 1, "4.4.1")}
    assert rows(parts, "QB2") == {"c@naver.test": ("bounced", 1, "5.1.1")}
    assert (await parts.js.stream_info("RESULTS")).state.messages == 0  # acknowledged
    # the same batch again (a redelivery): nothing changes
    await answer_batch(parts, result("QB2", "c@naver.test", "delivered", "2.0.0"))
    assert await parts.result_batches.run_until_idle() == 1
    assert rows(parts, "QB2") == {"c@naver.test": ("bounced", 1, "5.1.1")}


async def test_a_batch_whose_result_overtakes_its_message_comes_again_whole(parts):
    import asyncio

    await submit(parts, "QB3", ["a@naver.test"])
    await parts.intake.run_until_idle()
    parts.result_batches.unknown_tries = 40  # 2 s of asking again, as in production
    await answer_batch(parts, result("QB3", "a@naver.test", "delivered", "2.0.0"), result("QB4", "z@naver.test", "delivered", "2.0.0"))
    stop = asyncio.Event()
    task = asyncio.create_task(parts.result_batches.run(stop))
    try:
        await asyncio.sleep(0.3)  # QB4 is not recorded: the batch is asked for again meanwhile
        assert rows(parts, "QB3") == {"a@naver.test": ("delivered", 1, "2.0.0")}  # the known one is applied
        await submit(parts, "QB4", ["z@naver.test"])
        await parts.intake.run_until_idle()

        async def applied():
            return rows(parts, "QB4") == {"z@naver.test": ("delivered", 1, "2.0.0")}

        await await_for(applied, timeout=5, what="the batch applied after the commit")
        assert rows(parts, "QB3") == {"a@naver.test": ("delivered", 1, "2.0.0")}
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert (await parts.js.stream_info("RESULTS")).state.messages == 0


async def test_jobs_go_many_to_a_message_while_a_batch_reader_is_live(parts):
    """A delivery lane waits on the consumer of delivery.job.v2: intake sends one DeliveryJobs message
    for the whole batch instead of one DeliveryJob per recipient."""
    import asyncio

    from mailflow.contracts.messages import DeliveryJobs
    from mailflow.contracts.streams import DELIVERY_BATCHES, delivery_batches_consumer, ensure_consumer

    await ensure_consumer(parts.js, DELIVERY_BATCHES[0], delivery_batches_consumer())
    sub = await parts.js.pull_subscribe_bind(durable=DELIVERY_BATCHES[1], stream="JOBS")
    waiting = asyncio.ensure_future(sub.fetch(1, timeout=5))  # a lane asking for work

    async def reader_live():
        return (await parts.js.consumer_info(*DELIVERY_BATCHES)).num_waiting > 0

    await await_for(reader_live, timeout=5, what="a waiting pull request")
    await submit(parts, "QJ1", ["a@naver.test", "b@naver.test"])
    await submit(parts, "QJ2", ["c@naver.test"])
    assert await parts.intake.run_until_idle() == 2
    (m,) = await waiting
    await m.ack()
    jobs = DeliveryJobs.from_bytes(m.data).jobs
    assert sorted((j.queue_id, j.rcpt.address, j.attempt) for j in jobs) == [
        ("QJ1", "a@naver.test", 1),
        ("QJ1", "b@naver.test", 1),
        ("QJ2", "c@naver.test", 1),
    ]
    assert jobs[0].body_ref and m.headers["Nats-Msg-Id"].startswith("jobs/")
    await parts.jobs(expect=0)  # nothing one by one


async def test_jobs_go_one_by_one_without_a_live_batch_reader(parts):
    from mailflow.contracts.streams import DELIVERY_BATCHES, delivery_batches_consumer, ensure_consumer

    await ensure_consumer(parts.js, DELIVERY_BATCHES[0], delivery_batches_consumer())  # exists, but nobody asks
    await submit(parts, "QJ3", ["a@naver.test", "b@naver.test"])
    assert await parts.intake.run_until_idle() == 1
    await parts.jobs(expect=2)
    assert (await parts.js.consumer_info(*DELIVERY_BATCHES)).num_pending == 0


async def test_envelope_groups_are_recorded_like_single_envelopes(parts):
    """mail.queued.v2 (QueuedMessages from smtp-ingress): every envelope recorded, one job per recipient,
    the group acknowledged; a redelivered group records nothing twice."""
    from mailflow.contracts.messages import QueuedMessages
    from mailflow_queue.workers import IntakeBatches

    def envelope(qid, rcpts):
        return QueuedMessage(
            queue_id=qid, trace_id=f"trace-{qid}", mail_from="a@daum.test", rcpt_to=[Recipient(address=r) for r in rcpts],
            body_ref=f"inline:{qid}:{len(BODY)}", body=BODY, size=len(BODY), received_at=datetime.fromtimestamp(parts.clock.now, UTC),
        )

    intake = IntakeBatches(parts.nc, parts.js, parts.db, parts.outbox, parts.policy, clock=parts.clock)
    group = QueuedMessages(messages=[envelope("QG1", ["a@naver.test", "b@naver.test"]), envelope("QG2", ["c@naver.test"])])
    await parts.js.publish(subjects.MAIL_QUEUED_BATCH, group.to_bytes())
    assert await intake.run_until_idle() == 1
    assert rows(parts, "QG1") == {"a@naver.test": ("inflight", 1, ""), "b@naver.test": ("inflight", 1, "")}
    assert rows(parts, "QG2") == {"c@naver.test": ("inflight", 1, "")}
    await parts.jobs(expect=3)
    assert (await parts.js.stream_info("MAIL")).state.messages == 0
    await parts.js.publish(subjects.MAIL_QUEUED_BATCH, group.to_bytes(), headers={"Nats-Msg-Id": "again"})
    assert await intake.run_until_idle() == 1
    assert len(rows(parts, "QG1")) == 2 and len(rows(parts, "QG2")) == 1
