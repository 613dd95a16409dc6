"""Deliveries end to end inside one process: the real mailbox-store (tests/support/store.py), bodies in
memory, a resolver answering from a table, and a real SMTP server on loopback as the remote MX."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailflow import tls
from mailflow.contracts.messages import DeliveryJob, MxHost, MxReply, Recipient
from mailflow.errors import InsufficientStorage, ServiceUnavailable
from mailflow_delivery import smtp_out
from mailflow_delivery.routing import Deliveries, RemoteConfig
from services.delivery.tests.support import RemoteMta
from tests.support.doubles import MemoryBodies, MemorySentLog
from tests.support.store import TestStore

BODY = b"From: a@daum.test\r\nTo: z@naver.test\r\nSubject: hi\r\n\r\nHello\r\n"


class TableResolver:
    def __init__(self, replies: dict[str, MxReply]):
        self.replies, self.asked = replies, []

    async def lookup(self, domain: str) -> MxReply:
        self.asked.append(domain)
        return self.replies.get(domain) or MxReply(domain=domain, status="nxdomain")


class DownStore(TestStore):
    async def deliver(self, items):
        raise ServiceUnavailable("store down")


class FullStore(TestStore):
    async def deliver(self, items):
        raise InsufficientStorage("storage full")


@pytest.fixture
async def world(tmp_path, store):
    store.add_domain("daum.test")
    store.add_user("a@daum.test", "pw")
    store.add_user("small@daum.test", "pw", quota_bytes=10)
    bodies = MemoryBodies()
    with RemoteMta(tmp_path) as mta:
        resolver = TableResolver(
            {
                "naver.test": MxReply(domain="naver.test", status="ok", hosts=[MxHost(preference=10, host="mx.naver.test", addresses=["127.0.0.1"])]),
                "nullmx.test": MxReply(domain="nullmx.test", status="null_mx"),
                "flaky.test": MxReply(domain="flaky.test", status="temp_fail", error="SERVFAIL"),
            }
        )
        remote = RemoteConfig(
            port=mta.port,
            helo="mx.daum.test",
            tls=smtp_out.TlsPolicy("opportunistic", tls.client_context(verify=False)),
            timeouts=smtp_out.Timeouts(2, 2, 2, 2, 2),
        )
        sent = MemorySentLog()
        yield store, bodies, resolver, sent, mta, Deliveries(store, store, bodies, resolver, sent, remote)


async def jobs_for(bodies, qid, rcpts, attempt=1, mail_from="a@daum.test"):
    ref = await bodies.put(qid, BODY)
    return [
        DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=attempt, mail_from=mail_from, rcpt=Recipient(address=r), body_ref=ref, size=len(BODY), received_at=datetime.now(UTC))
        for r in rcpts
    ]


def outcomes(results):
    return [(r.rcpt, r.outcome, r.status) for r in results]


async def test_local_delivery_is_idempotent(world):
    store, bodies, _, _, _, d = world
    jobs = await jobs_for(bodies, "Q1", ["a@daum.test", "nobody@daum.test", "small@daum.test"])
    results, traces = await d.run(jobs)
    assert outcomes(results) == [
        ("a@daum.test", "delivered", "2.0.0"),
        ("nobody@daum.test", "bounced", "5.1.1"),
        ("small@daum.test", "bounced", "5.2.2"),  # bigger than the whole quota: never fits
    ]
    # one resolver step for the message's local domain (no MX lookup), one delivery step per recipient
    assert [t.step for t in traces] == ["resolver"] + ["delivery"] * 3
    assert traces[0].detail == "daum.test: local domain, to mailbox-store (no MX lookup)"
    assert all(t.at - timedelta(milliseconds=t.duration_ms) == traces[0].at - timedelta(milliseconds=traces[0].duration_ms) for t in traces)
    again, _ = await d.run(jobs[:1])  # a redelivered job
    assert again[0].outcome == "delivered"
    (body,) = store.messages("a@daum.test")
    assert body == b"Return-Path: <a@daum.test>\r\n" + BODY  # as accepted, under the Return-Path line


async def test_junk_lands_in_the_local_users_junk_and_leaves_unchanged_for_remote_ones(world):
    store, bodies, _, _, mta, d = world
    jobs = [j.model_copy(update={"junk": True}) for j in await jobs_for(bodies, "QJ", ["a@daum.test", "z@naver.test"])]
    results, _ = await d.run(jobs)
    assert outcomes(results) == [("a@daum.test", "delivered", "2.0.0"), ("z@naver.test", "delivered", "2.0.0")]
    assert store.messages("a@daum.test", "Junk") == [b"Return-Path: <a@daum.test>\r\n" + BODY]
    assert store.messages("a@daum.test") == []  # nothing in INBOX
    assert len(mta.messages) == 1 and mta.messages[0].rcpts == ["z@naver.test"]


async def test_store_down_defers_and_body_gone_bounces(world):
    store, bodies, resolver, sent, _, _ = world
    down_store = DownStore(store.local)  # the same store (a@daum.test is a user), whose deliver() fails
    down = Deliveries(down_store, down_store, bodies, resolver, sent)
    results, _ = await down.run(await jobs_for(bodies, "Q2", ["a@daum.test"]))
    assert outcomes(results) == [("a@daum.test", "deferred", "4.3.0")]
    jobs = await jobs_for(bodies, "Q3", ["a@daum.test"])
    await bodies.delete(jobs[0].body_ref)
    results, _ = await Deliveries(store, store, bodies, resolver, sent).run(jobs)
    assert outcomes(results) == [("a@daum.test", "bounced", "5.3.0")]


async def test_store_disk_full_defers_with_452_4_3_1(world):
    store, bodies, resolver, sent, _, _ = world
    full_store = FullStore(store.local)  # the same store (a@daum.test is a user), whose disk is full
    full = Deliveries(full_store, full_store, bodies, resolver, sent)
    results, _ = await full.run(await jobs_for(bodies, "Q5", ["a@daum.test"]))
    assert outcomes(results) == [("a@daum.test", "deferred", "4.3.1")]
    assert results[0].diagnostic.startswith("452 4.3.1")


async def test_remote_delivery_per_recipient_and_never_twice(world):
    _, bodies, resolver, sent, mta, d = world
    jobs = await jobs_for(bodies, "Q4", ["z@naver.test", "unknown@naver.test", "busy@naver.test", "full@naver.test"])
    results, traces = await d.run(jobs)
    assert outcomes(results) == [
        ("z@naver.test", "delivered", "2.0.0"),
        ("unknown@naver.test", "bounced", "5.1.1"),
        ("busy@naver.test", "deferred", "4.2.1"),
        ("full@naver.test", "deferred", "4.2.2"),  # 552 at RCPT is temporary (RFC 5321 §4.5.3.1.10)
    ]
    assert results[0].remote_mta == "mx.naver.test" and "250" in results[0].diagnostic
    assert resolver.asked == ["naver.test"]  # one lookup, one transaction for the message
    assert len(mta.messages) == 1 and mta.messages[0].rcpts == ["z@naver.test"]
    assert {t.step for t in traces} == {"resolver", "delivery"}
    # redelivered (the ack was lost): answered from the sent log, not sent again
    again, _ = await d.run([jobs[0].model_copy(update={"attempt": 2})])
    assert outcomes(again) == [("z@naver.test", "delivered", "2.0.0")] and again[0].attempt == 2
    assert len(mta.messages) == 1


async def test_dns_outcomes_and_unreachable_mx(world):
    _, bodies, resolver, sent, _, d = world
    jobs = await jobs_for(bodies, "Q5", ["x@nullmx.test", "x@missing.test", "x@flaky.test"])
    results, _ = await d.run(jobs)
    assert outcomes(results) == [
        ("x@nullmx.test", "bounced", "5.1.10"),
        ("x@missing.test", "bounced", "5.1.2"),
        ("x@flaky.test", "deferred", "4.4.3"),
    ]
    resolver.replies["down.test"] = MxReply(domain="down.test", status="ok", hosts=[MxHost(preference=1, host="mx.down.test", addresses=["127.0.0.9"])])
    d.remote_cfg = RemoteConfig(port=1, timeouts=smtp_out.Timeouts(1, 1, 1, 1, 1))
    results, _ = await d.run(await jobs_for(bodies, "Q6", ["x@down.test"]))
    assert outcomes(results) == [("x@down.test", "deferred", "4.4.1")]
    assert "mx.down.test" in results[0].diagnostic


def inline_jobs(qid, rcpts, body=BODY):
    return [
        DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=1, mail_from="a@daum.test", rcpt=Recipient(address=r), body_ref=f"inline:{qid}:{len(body)}", size=len(body), body=body, received_at=datetime.now(UTC))
        for r in rcpts
    ]


async def test_an_inline_body_needs_no_body_store_locally_or_remotely(world):
    store, _, _, sent, mta, d = world
    d.bodies = MemoryBodies()  # empty: a read would fail the message
    results, _ = await d.run(inline_jobs("QI", ["a@daum.test", "z@naver.test"]))
    assert outcomes(results) == [("a@daum.test", "delivered", "2.0.0"), ("z@naver.test", "delivered", "2.0.0")]
    (body,) = store.messages("a@daum.test")
    assert body == b"Return-Path: <a@daum.test>\r\n" + BODY
    assert mta.messages[0].rcpts == ["z@naver.test"] and mta.messages[0].data.endswith(b"Hello\r\n")


async def test_an_inline_ref_without_its_body_is_deferred_never_bounced(world):
    """What an older delivery process does with a job it cannot read: try again later."""
    _, _, _, _, _, d = world
    job = inline_jobs("QJ", ["a@daum.test"])[0].model_copy(update={"body": None})
    results, _ = await d.run([job])
    assert outcomes(results) == [("a@daum.test", "deferred", "4.3.0")]
