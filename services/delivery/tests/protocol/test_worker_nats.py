"""The delivery worker on a real nats-server: jobs in, the batch's results out in one message, then the
ack; the sent log lives in JetStream, so a second process (or a restart) never sends a message twice."""

from __future__ import annotations

from datetime import UTC, datetime

from mailflow import tls
from mailflow.bodies import JetStreamBodies
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    DeliveryJob,
    DeliveryJobs,
    DeliveryResults,
    MxHost,
    MxReply,
    Recipient,
)
from mailflow_delivery import smtp_out
from mailflow_delivery.routing import Deliveries, RemoteConfig
from mailflow_delivery.sentlog import KvSentLog
from mailflow_delivery.worker import DeliveryWorker
from services.delivery.tests.protocol.test_routing import TableResolver
from services.delivery.tests.support import RemoteMta
from tests.support import await_for

BODY = b"Subject: hi\r\n\r\nHello\r\n"


async def results(js, n, messages=None):
    """n results from delivery.result (and the messages that carried them, if `messages` is a list)."""
    sub = await js.pull_subscribe_bind(durable="queue-results", stream="RESULTS")
    out = []
    while len(out) < n:
        for m in await sub.fetch(16, timeout=5):
            await m.ack()
            out += DeliveryResults.from_bytes(m.data).results
            if messages is not None:
                messages.append(m)
    return out


def jobs_of(*jobs: DeliveryJob) -> bytes:
    """What the queue publishes on delivery.job: the jobs of one batch."""
    return DeliveryJobs(jobs=list(jobs)).to_bytes()


def job(qid, rcpt):
    return DeliveryJob(queue_id=qid, trace_id="t", attempt=1, mail_from="b@naver.test", rcpt=Recipient(address=rcpt), body_ref=f"inline:{qid}:22", body=BODY, size=len(BODY), received_at=datetime.now(UTC))


async def test_worker_publishes_results_then_acks_and_never_sends_twice(js, tmp_path, store):
    store.add_user("a@daum.test", "pw")
    bodies = JetStreamBodies(js)
    ref = await bodies.put("QW", BODY)
    with RemoteMta(tmp_path) as mta:
        resolver = TableResolver({"naver.test": MxReply(domain="naver.test", status="ok", hosts=[MxHost(preference=10, host="mx.naver.test", addresses=["127.0.0.1"])])})
        remote = RemoteConfig(port=mta.port, tls=smtp_out.TlsPolicy("opportunistic", tls.client_context(verify=False)), timeouts=smtp_out.Timeouts(2, 2, 2, 2, 2))

        def worker(sent):
            return DeliveryWorker(js._nc, js, Deliveries(store, store, bodies, resolver, sent, remote))

        jobs = [
            DeliveryJob(queue_id="QW", trace_id="tw", attempt=1, mail_from="b@naver.test", rcpt=Recipient(address=a), body_ref=ref, size=len(BODY), received_at=datetime.now(UTC))
            for a in ("a@daum.test", "z@naver.test")
        ]
        for j in jobs:
            await js.publish(subjects.DELIVERY_JOB, jobs_of(j))
        sent = await KvSentLog.open(js)
        assert await worker(sent).run_until_idle() == 2
        carried = []
        got = {r.rcpt: (r.outcome, r.trace_id) for r in await results(js, 2, carried)}
        assert got == {"a@daum.test": ("delivered", "tw"), "z@naver.test": ("delivered", "tw")}
        assert len(carried) == 1  # one message for the batch
        assert (await js.stream_info("JOBS")).state.messages == 0  # acknowledged
        # the remote job again (as after a crash before the ack), to a "new process" with a fresh handle
        await js.publish(subjects.DELIVERY_JOB, jobs_of(jobs[1].model_copy(update={"attempt": 2})))
        assert await worker(await KvSentLog.open(js)).run_until_idle() == 1
        (again,) = await results(js, 1)
        assert again.outcome == "delivered" and again.attempt == 2
        assert len(mta.messages) == 1

    async def traces():  # resolver, delivery x2 (+1 for the redelivery); published without PubAcks
        return (await js.stream_info("TRACE", subjects_filter=subjects.trace("QW"))).state.messages >= 3

    await await_for(traces, timeout=5, what="trace events")


async def test_results_do_not_wait_for_trace_events(js, store):
    """Without a TRACE stream, the result is still published and the job acknowledged."""
    store.add_user("a@daum.test", "pw")
    await js.delete_stream("TRACE")
    job = DeliveryJob(queue_id="QN", trace_id="tn", attempt=1, mail_from="b@naver.test", rcpt=Recipient(address="a@daum.test"), body_ref="inline:QN:22", body=BODY, size=len(BODY), received_at=datetime.now(UTC))
    await js.publish(subjects.DELIVERY_JOB, jobs_of(job))
    worker = DeliveryWorker(js._nc, js, Deliveries(store, store, JetStreamBodies(js), TableResolver({}), await KvSentLog.open(js)))
    assert await worker.run_until_idle() == 1
    (res,) = await results(js, 1)
    assert res.outcome == "delivered"
    assert (await js.stream_info("JOBS")).state.messages == 0


async def test_stop_finishes_the_batch_in_hand(js, store):
    """SIGTERM while a remote transaction is under way: the worker finishes it, publishes the result,
    acknowledges the job, then returns (issue 7: stop intake, finish in-flight work, drain)."""
    import asyncio

    from services.delivery.tests.support import Scripted

    bodies = JetStreamBodies(js)
    ref = await bodies.put("QS", BODY)
    slow = await Scripted(replies={"DATA": "354 go"}, dot_delay=1.0).start()
    try:
        resolver = TableResolver({"slow.test": MxReply(domain="slow.test", status="ok", hosts=[MxHost(preference=1, host="mx.slow.test", addresses=["127.0.0.1"])])})
        remote = RemoteConfig(port=slow.port, tls=smtp_out.TlsPolicy("none"), timeouts=smtp_out.Timeouts(5, 5, 5, 5, 5))
        worker = DeliveryWorker(js._nc, js, Deliveries(store, store, bodies, resolver, await KvSentLog.open(js), remote))
        job = DeliveryJob(queue_id="QS", trace_id="ts", attempt=1, mail_from="a@daum.test", rcpt=Recipient(address="z@slow.test"), body_ref=ref, size=len(BODY), received_at=datetime.now(UTC))
        await js.publish(subjects.DELIVERY_JOB, jobs_of(job))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        while not any(line.startswith(b"MAIL FROM") for line in slow.lines):
            await asyncio.sleep(0.01)
        stop.set()  # mid-transaction
        await asyncio.wait_for(task, 10)
        (res,) = await results(js, 1)
        assert res.outcome == "delivered"
        assert (await js.stream_info("JOBS")).state.messages == 0
    finally:
        await slow.stop()


async def test_a_message_of_many_jobs_is_delivered_as_one_batch(js, store):
    store.add_user("a@daum.test", "pw")
    store.add_user("c@daum.test", "pw")
    worker = DeliveryWorker(js._nc, js, Deliveries(store, store, JetStreamBodies(js), TableResolver({}), await KvSentLog.open(js)))
    batch = jobs_of(job("QB", "a@daum.test"), job("QB", "c@daum.test"), job("QC", "a@daum.test"))
    await js.publish(subjects.DELIVERY_JOB, batch)
    assert await worker.run_until_idle() == 1
    carried = []
    got = sorted((r.queue_id, r.rcpt, r.outcome) for r in await results(js, 3, carried))
    assert got == [("QB", "a@daum.test", "delivered"), ("QB", "c@daum.test", "delivered"), ("QC", "a@daum.test", "delivered")]
    assert len(carried) == 1
    assert (await js.stream_info("JOBS")).state.messages == 0  # acknowledged
    # the same jobs again (a redelivery): stored once per recipient; the same results again are dropped
    # by JetStream as a duplicate of the batch already answered (same Nats-Msg-Id)
    await js.publish(subjects.DELIVERY_JOB, batch, headers={"Nats-Msg-Id": "again"})
    assert await worker.run_until_idle() == 1
    assert (await js.stream_info("RESULTS")).state.messages == 0
    assert (await js.stream_info("JOBS")).state.messages == 0
    assert sum(len(store.messages(a, mailbox=None)) for a in ("a@daum.test", "c@daum.test")) == 3
