"""The queue against a real nats-server and real databases: intake, results, retries, DSNs, bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from mailflow.bodies import BodyMissing
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    ClientInfo,
    DeliveryResult,
    DeliveryResults,
    QueuedMessage,
    QueuedMessages,
    Recipient,
)
from mailflow.jspub import group_msg_id
from mailflow_queue import db, ledger, metrics
from mailflow_queue.scheduler import CLAIM_S
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
    await parts.js.publish(subjects.MAIL_QUEUED, group(msg), headers={"Nats-Msg-Id": qid})
    return msg


def group(*msgs: QueuedMessage) -> bytes:
    """What smtp-ingress publishes on mail.queued: the envelopes accepted together."""
    return QueuedMessages(messages=list(msgs)).to_bytes()


async def answer(parts, qid, rcpt, outcome, status, attempt=1, diag=""):
    """A delivery result made now, by the queue's clock."""
    at = datetime.fromtimestamp(parts.clock.now, UTC)
    r = DeliveryResult(queue_id=qid, rcpt=rcpt, attempt=attempt, outcome=outcome, status=status, diagnostic=diag, at=at)
    await answer_batch(parts, r)


def result(qid, rcpt, outcome, status, attempt=1):
    return DeliveryResult(queue_id=qid, rcpt=rcpt, attempt=attempt, outcome=outcome, status=status)


async def answer_batch(parts, *results):
    """What a delivery batch sends back: its results in one DeliveryResults message (delivery.result)."""
    await parts.js.publish(subjects.DELIVERY_RESULT, DeliveryResults(results=list(results)).to_bytes())


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
    carried = []
    jobs = await parts.jobs(expect=2, messages=carried)
    assert len(carried) == 1  # the jobs of a batch go many to a message
    assert {msg_id for _, msg_id in jobs} == {group_msg_id("jobs", ["Q1/z@naver.test/1", "Q1/y@naver.test/1"])}
    job = jobs[0][0]
    assert job.body_ref == msg.body_ref and job.trace_id == "trace-Q1" and job.attempt == 1
    # the same message again (a redelivery after a crash): recorded once, jobs deduplicated by JetStream
    await parts.js.publish(subjects.MAIL_QUEUED, group(msg))
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
    timed = metrics.DELIVERY_LATENCY.collect()[0].samples
    count0, sum0 = (next(x.value for x in timed if x.name.endswith(k)) for k in ("_count", "_sum"))
    await answer(parts, "Q2", "later@naver.test", "delivered", "2.0.0", attempt=2)
    await parts.results.run_until_idle()
    timed = metrics.DELIVERY_LATENCY.collect()[0].samples  # the retried one: ~61 s after acceptance
    count1, sum1 = (next(x.value for x in timed if x.name.endswith(k)) for k in ("_count", "_sum"))
    assert count1 - count0 == 1 and 60 < sum1 - sum0 < 120
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


async def test_a_reply_with_nul_in_it_is_recorded_without(parts):
    """A remote server's reply may hold NUL bytes; PostgreSQL text refuses them, which would make the
    results batch fail over and over (and end in DEAD): they are left out."""
    await submit(parts, "QZ", ["z@naver.test", "y@naver.test"])
    await parts.intake.run_until_idle()
    await answer_batch(
        parts,
        DeliveryResult(queue_id="QZ", rcpt="z@naver.test", attempt=1, outcome="bounced", status="5.1.1", diagnostic="550 5.1.1 no\0 such user"),
        DeliveryResult(queue_id="QZ", rcpt="y@naver.test", attempt=1, outcome="deferred", status="4.\x004.1", diagnostic="451 \0\0"),
    )
    assert await parts.results.run_until_idle() == 1
    assert rows(parts, "QZ") == {"z@naver.test": ("bounced", 1, "5.1.1"), "y@naver.test": ("deferred", 1, "4.4.1")}
    assert parts.db.call(lambda s: {r.last_error for r in s.scalars(sa.select(db.Recipient))}) == {"550 5.1.1 no such user", "451 "}


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


SUBMISSION = ClientInfo(ip="127.0.0.1", listener="submission", auth_user="a@daum.test")


async def test_delay_notice_once_and_success_notice_on_request(parts):
    await submit(parts, "Q6", [Recipient(address="z@naver.test"), Recipient(address="x@naver.test", notify=["SUCCESS"])], client=SUBMISSION)
    await parts.intake.run_until_idle()
    await answer(parts, "Q6", "z@naver.test", "deferred", "4.4.1", diag="connection refused")
    await answer(parts, "Q6", "x@naver.test", "delivered", "2.0.0")
    await parts.results.run_until_idle()
    parts.clock.now += 4 * 3600 + 1
    await parts.scheduler.tick()
    await parts.scheduler.tick()
    kinds = parts.db.call(lambda s: sorted((n.kind, n.sent) for n in s.scalars(sa.select(db.Notice))))
    assert kinds == [("delay", True), ("success", True)]


async def test_success_notices_only_for_authenticated_submissions(parts):
    """Backscatter: anyone may send to our MX with a forged sender and NOTIFY=SUCCESS. A success DSN goes
    only to a sender who authenticated; failure DSNs (and delay ones) are unchanged."""
    mx = ClientInfo(ip="192.0.2.7", listener="mx")
    await submit(parts, "QS1", [Recipient(address="x@naver.test", notify=["SUCCESS", "FAILURE"]), Recipient(address="y@naver.test", notify=["SUCCESS", "FAILURE"])], client=mx)
    await submit(parts, "QS2", [Recipient(address="x@naver.test", notify=["SUCCESS"])], client=SUBMISSION)
    await submit(parts, "QS3", [Recipient(address="x@naver.test", notify=["SUCCESS"])])  # no client: made by Mailflow
    await parts.intake.run_until_idle()
    await answer(parts, "QS1", "x@naver.test", "delivered", "2.0.0")
    await answer(parts, "QS1", "y@naver.test", "bounced", "5.1.1")
    await answer(parts, "QS2", "x@naver.test", "delivered", "2.0.0")
    await answer(parts, "QS3", "x@naver.test", "delivered", "2.0.0")
    await parts.results.run_until_idle()
    await parts.scheduler.tick()
    notices = parts.db.call(lambda s: sorted((n.queue_id, n.kind, n.sent) for n in s.scalars(sa.select(db.Notice))))
    assert notices == [("QS1", "failure", True), ("QS2", "success", True)]


async def test_jobs_say_which_mail_leaves_dkim_signed(parts):
    """Signed on the way out: an authenticated submission and a DSN (no client), also when retried; mail
    that came in on the MX without AUTH never."""
    mx = ClientInfo(ip="192.0.2.7", listener="mx")
    await submit(parts, "QK1", ["x@naver.test"], client=SUBMISSION)
    await submit(parts, "QK2", ["x@naver.test"], client=mx)
    await parts.intake.run_until_idle()
    first = {j.queue_id: j.dkim for j, _ in await parts.jobs(expect=2)}
    assert first == {"QK1": True, "QK2": False}
    await answer(parts, "QK1", "x@naver.test", "deferred", "4.4.1")
    await answer(parts, "QK2", "x@naver.test", "bounced", "5.1.1")
    await parts.results.run_until_idle()
    parts.clock.now += 61
    await parts.scheduler.tick()  # the retry of QK1, and the DSN about QK2 into mail.queued
    assert await parts.intake.run_until_idle() == 1
    later = {j.queue_id: (j.mail_from, j.dkim) for j, _ in await parts.jobs(expect=2)}
    assert later.pop("QK1") == ("a@daum.test", True)
    assert list(later.values()) == [("", True)]  # the DSN


async def test_junk_goes_with_every_job_and_retry(parts):
    """smtp-ingress marks a message that failed DMARC with p=quarantine; each recipient's job says so,
    the first and every retry (the ledger keeps it)."""
    await submit(parts, "QJ1", ["x@naver.test", "y@naver.test"], junk=True)
    await submit(parts, "QJ2", ["x@naver.test"])
    await parts.intake.run_until_idle()
    first = sorted((j.queue_id, j.rcpt.address, j.junk) for j, _ in await parts.jobs(expect=3))
    assert first == [("QJ1", "x@naver.test", True), ("QJ1", "y@naver.test", True), ("QJ2", "x@naver.test", False)]
    await answer(parts, "QJ1", "x@naver.test", "deferred", "4.2.2")
    await parts.results.run_until_idle()
    parts.clock.now += 61
    await parts.scheduler.tick()
    assert [(j.queue_id, j.attempt, j.junk) for j, _ in await parts.jobs(expect=1)] == [("QJ1", 2, True)]


class SlowCommit:
    """The queue's database, with an intake transaction that takes `delay` seconds (and fails, `fail` times)."""

    def __init__(self, real, delay: float, fail: int = 0):
        self.real, self.delay, self.fail = real, delay, fail

    async def run(self, fn, *args):
        import asyncio

        if fn is ledger.record:
            await asyncio.sleep(self.delay)
            if self.fail:
                self.fail -= 1
                raise RuntimeError("commit failed")
        return await self.real.run(fn, *args)


async def test_a_result_that_overtakes_its_messages_commit_waits_for_it_and_is_never_asked_for_again(parts):
    """A new message's jobs go out while its intake transaction commits (the two fsyncs side by side):
    a result can come back first. It waits for that commit, in this process, then is applied: no nak,
    no redelivery."""
    import asyncio

    parts.intake.db = SlowCommit(parts.db, delay=2.0)
    await submit(parts, "Q7", ["z@naver.test"])
    intake = asyncio.create_task(parts.intake.run_until_idle())
    ((job, _),) = await parts.jobs(expect=1)  # out before the commit
    assert job.queue_id == "Q7" and not intake.done() and rows(parts, "Q7") == {}
    await answer(parts, "Q7", "z@naver.test", "delivered", "2.0.0")
    assert await parts.results.run_until_idle() == 1
    assert await intake == 1
    assert rows(parts, "Q7") == {"z@naver.test": ("delivered", 1, "2.0.0")}
    info = await parts.js.consumer_info("RESULTS", "queue-results")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_result_whose_messages_commit_failed_comes_again_until_it_is_recorded(parts):
    import asyncio

    parts.intake.db = SlowCommit(parts.db, delay=0.5, fail=1)
    await submit(parts, "Q8", ["z@naver.test"])
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in (parts.intake, parts.results)]
    try:
        ((job, _),) = await parts.jobs(expect=1)  # out before the commit that failed
        await answer(parts, "Q8", "z@naver.test", "delivered", "2.0.0")

        async def applied():
            return rows(parts, "Q8") == {"z@naver.test": ("delivered", 1, "2.0.0")}

        await await_for(applied, timeout=15, what="the result applied once the message is recorded")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    await parts.jobs(expect=0)  # the jobs published again after the commit were the same message: dropped
    assert (await parts.js.stream_info("DEAD")).state.messages == 0


async def test_a_result_for_a_message_the_queue_does_not_know(parts):
    """A retry's result, or a first attempt's made longer ago than a commit may take: the message was
    deleted (`queue delete`, or purged), the result is stale, never asked for again. A first attempt's
    result made just now may be for a message whose intake commit is still running in another queue
    process: it comes again."""
    old = datetime.fromtimestamp(parts.clock.now - 121, UTC)
    await answer_batch(parts, result("GONE", "z@naver.test", "delivered", "2.0.0", attempt=2))
    await answer_batch(parts, DeliveryResult(queue_id="GONE", rcpt="y@naver.test", attempt=1, outcome="delivered", status="2.0.0", at=old))
    assert await parts.results.run_until_idle() == 2
    assert (await parts.js.stream_info("RESULTS")).state.messages == 0
    assert (await parts.js.consumer_info("RESULTS", "queue-results")).num_redelivered == 0
    await answer(parts, "ELSEWHERE", "z@naver.test", "delivered", "2.0.0")
    parts.results.retry_first = 0.05
    assert await parts.results.run_until_idle(idle=1.0) >= 2  # asked for again
    assert rows(parts, "ELSEWHERE") == {}
    assert (await parts.js.consumer_info("RESULTS", "queue-results")).num_redelivered == 1


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
    parts.clock.now += CLAIM_S - 1  # still claimed by the pass whose publish failed
    await parts.scheduler.tick()
    await parts.jobs(expect=0)
    parts.clock.now += 1  # the claim lapsed: due again, not only after the 30 minutes of the in-flight timeout
    await parts.scheduler.tick()
    ((job, msg_id),) = await parts.jobs(expect=1)
    assert job.attempt == 2 and msg_id == "Q8/z@naver.test/2"
    # out and PubAck'ed: in flight until the in-flight timeout, no longer only claimed
    due = parts.db.call(lambda s: s.scalar(sa.select(db.Recipient.next_attempt_at).where(db.Recipient.queue_id == "Q8")))
    assert due == parts.clock.now + parts.policy.inflight_timeout_s


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
    await parts.js.publish(subjects.MAIL_QUEUED, group(msg), headers={"Nats-Msg-Id": qid})
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
    await parts.js.publish(subjects.MAIL_QUEUED, group(msg))
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
    assert await parts.results.run_until_idle() == 1
    assert rows(parts, "QB1") == {"a@naver.test": ("delivered", 1, "2.0.0"), "b@naver.test": ("deferred", 1, "4.4.1")}
    assert rows(parts, "QB2") == {"c@naver.test": ("bounced", 1, "5.1.1")}
    assert (await parts.js.stream_info("RESULTS")).state.messages == 0  # acknowledged
    # the same batch again (a redelivery): nothing changes
    await answer_batch(parts, result("QB2", "c@naver.test", "delivered", "2.0.0"))
    assert await parts.results.run_until_idle() == 1
    assert rows(parts, "QB2") == {"c@naver.test": ("bounced", 1, "5.1.1")}


async def test_a_batch_with_a_deleted_message_applies_the_others(parts):
    from mailflow_queue import admin

    await submit(parts, "QB3", ["a@naver.test"])
    await submit(parts, "QB4", ["z@naver.test"])
    await parts.intake.run_until_idle()
    assert parts.db.call(admin.delete, "QB4")  # by an operator, while its job was out
    await answer_batch(parts, result("QB3", "a@naver.test", "delivered", "2.0.0"), result("QB4", "z@naver.test", "delivered", "2.0.0"))
    assert await parts.results.run_until_idle() == 1
    assert rows(parts, "QB3") == {"a@naver.test": ("delivered", 1, "2.0.0")}
    assert (await parts.js.stream_info("RESULTS")).state.messages == 0
    assert message(parts, "QB4") is None


async def test_a_batch_of_jobs_is_cut_by_count_and_by_bytes():
    """Up to 32 jobs, and about 512 KiB, per DeliveryJobs message; each message decodes whole."""
    from mailflow.contracts.messages import DeliveryJob, DeliveryJobs
    from mailflow_queue.outbox import JOBS_MESSAGE_BYTES, JOBS_PER_MESSAGE, batched

    def job(n, body=None):
        return DeliveryJob(
            queue_id=f"QC{n}", trace_id="t", attempt=1, mail_from="a@daum.test", rcpt=Recipient(address=f"u{n}@naver.test"),
            body_ref=f"inline:QC{n}:{len(body or b'')}", size=len(body or b""), body=body, received_at=datetime.now(UTC),
        )

    messages = batched([job(n) for n in range(70)])
    assert [len(DeliveryJobs.from_bytes(data).jobs) for _, data, _ in messages] == [JOBS_PER_MESSAGE, JOBS_PER_MESSAGE, 6]
    assert all(subject == subjects.DELIVERY_JOB for subject, _, _ in messages)
    big = bytes(range(256)) * 800  # 200 KiB inline: 267 KiB of base64
    messages = batched([job(n, big) for n in range(5)])
    assert [len(DeliveryJobs.from_bytes(data).jobs) for _, data, _ in messages] == [1, 1, 1, 1, 1]
    assert all(len(data) <= JOBS_MESSAGE_BYTES for _, data, _ in messages)
    assert messages[0][2]["Nats-Msg-Id"] == "QC0/u0@naver.test/1"  # a message of one job: the job's id


async def test_envelope_groups_are_recorded_like_single_envelopes(parts):
    """An envelope group (QueuedMessages from smtp-ingress): every envelope recorded, one job per
    recipient, the group acknowledged; a redelivered group records nothing twice."""

    def envelope(qid, rcpts):
        return QueuedMessage(
            queue_id=qid, trace_id=f"trace-{qid}", mail_from="a@daum.test", rcpt_to=[Recipient(address=r) for r in rcpts],
            body_ref=f"inline:{qid}:{len(BODY)}", body=BODY, size=len(BODY), received_at=datetime.fromtimestamp(parts.clock.now, UTC),
        )

    intake = parts.intake
    data = group(envelope("QG1", ["a@naver.test", "b@naver.test"]), envelope("QG2", ["c@naver.test"]))
    await parts.js.publish(subjects.MAIL_QUEUED, data)
    assert await intake.run_until_idle() == 1
    assert rows(parts, "QG1") == {"a@naver.test": ("inflight", 1, ""), "b@naver.test": ("inflight", 1, "")}
    assert rows(parts, "QG2") == {"c@naver.test": ("inflight", 1, "")}
    await parts.jobs(expect=3)
    assert (await parts.js.stream_info("MAIL")).state.messages == 0
    await parts.js.publish(subjects.MAIL_QUEUED, data, headers={"Nats-Msg-Id": "again"})
    assert await intake.run_until_idle() == 1
    assert len(rows(parts, "QG1")) == 2 and len(rows(parts, "QG2")) == 1


async def test_a_forwarded_recipient_keeps_its_alias_through_retries_and_its_bounce_goes_to_the_sender(parts):
    """smtp-ingress expanded team@daum.test: carol elsewhere is a recipient of her own, marked forwarded."""
    carol = Recipient(address="carol@naver.test", orcpt="rfc822;team@daum.test", forwarded_for="team@daum.test")
    await submit(parts, "QF", ["team@daum.test", carol], mail_from="x@outside.test")
    await parts.intake.run_until_idle()
    jobs = {j.rcpt.address: j for j, _ in await parts.jobs(expect=2)}
    assert jobs["carol@naver.test"].rcpt.forwarded_for == "team@daum.test"
    assert jobs["team@daum.test"].rcpt.forwarded_for is None
    await answer_batch(parts, result("QF", "team@daum.test", "delivered", "2.0.0"), result("QF", "carol@naver.test", "deferred", "4.4.1"))
    await parts.results.run_until_idle()
    parts.clock.now += 120
    await parts.scheduler.tick()
    ((job, _),) = await parts.jobs(expect=1)  # the retry is made from the database row
    assert (job.attempt, job.rcpt.forwarded_for, job.rcpt.orcpt) == (2, "team@daum.test", "rfc822;team@daum.test")
    await answer(parts, "QF", "carol@naver.test", "bounced", "5.1.1", attempt=2, diag="550 5.1.1 no such user")
    await parts.results.run_until_idle()
    await parts.scheduler.tick()
    assert await parts.intake.run_until_idle() == 1
    ((dsn, _),) = await parts.jobs(expect=1)
    assert dsn.mail_from == "" and dsn.rcpt.address == "x@outside.test"  # to the original sender
    assert b"Final-Recipient: rfc822; carol@naver.test" in dsn.body
    assert b"Original-Recipient: rfc822;team@daum.test" in dsn.body


async def test_requiretls_goes_with_every_job_and_its_failure_dsn_returns_headers_only(parts):
    """RFC 8689: the mark travels to every job (delivery holds the hops to it); the notice of a failure
    may travel where TLS is not required, so it never carries the body (RFC 8689 §5), RET=FULL or not."""
    await submit_inline(parts, "QR1", ["bad@naver.test", "y@naver.test"], requiretls=True, ret="FULL")
    await parts.intake.run_until_idle()
    first = sorted((j.rcpt.address, j.requiretls) for j, _ in await parts.jobs(expect=2))
    assert first == [("bad@naver.test", True), ("y@naver.test", True)]
    await answer(parts, "QR1", "bad@naver.test", "bounced", "5.7.10", diag="550 5.7.10 REQUIRETLS: no way")
    await answer(parts, "QR1", "y@naver.test", "delivered", "2.0.0")
    await parts.results.run_until_idle()
    await parts.scheduler.tick()
    assert await parts.intake.run_until_idle() == 1
    ((dsn, _),) = await parts.jobs(expect=1)
    assert dsn.mail_from == "" and dsn.requiretls is False
    assert b"Final-Recipient: rfc822; bad@naver.test" in dsn.body and b"text/rfc822-headers" in dsn.body
    assert b"Hi Z." not in dsn.body  # the original's body stays out


async def test_a_recipient_deferred_by_mta_sts_until_the_end_bounces_with_that_reason(parts):
    """Delivery defers while the recipient domain's MTA-STS policy (enforce) cannot be met; when the
    queue gives up, the sender's DSN says why."""
    why = "451 4.7.5 MTA-STS policy of naver.test (enforce, id g1): no MX host could be used over verified TLS: mx.naver.test[192.0.2.1]: TLS handshake failed: certificate has expired"
    await submit(parts, "QT", ["z@naver.test"])
    await parts.intake.run_until_idle()
    parts.clock.now += 5 * 86400 + 1
    await answer(parts, "QT", "z@naver.test", "deferred", "4.7.5", diag=why)
    await parts.results.run_until_idle()
    assert rows(parts, "QT") == {"z@naver.test": ("bounced", 1, "4.4.7")}
    await parts.scheduler.tick()
    assert await parts.intake.run_until_idle() == 1
    (dsn,) = parts.db.call(lambda s: list(s.scalars(sa.select(db.Message).where(db.Message.mail_from == ""))))
    raw = parts.db.call(lambda s: s.get(db.Body, dsn.queue_id).data).decode()
    assert "Diagnostic-Code: smtp; gave up after 1 attempts: 4.7.5 451 4.7.5 MTA-STS policy of naver.test (enforce" in " ".join(raw.split())
