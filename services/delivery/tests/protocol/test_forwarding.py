"""Forwarded copies (an alias's targets in other domains) where they leave: the real mailbox-store, an
SMTP server on loopback as the remote MX, the jobs as the queue makes them for an expanded alias."""

from __future__ import annotations

from datetime import UTC, datetime

import dkim as dkimpy
import pytest

from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow_delivery import smtp_out
from mailflow_delivery.dkim import Signer
from mailflow_delivery.forwarding import Forwarder
from mailflow_delivery.routing import Deliveries, RemoteConfig
from services.delivery.tests.support import KeylessStore, LoopbackMx, RemoteMta
from tests.support.doubles import MemoryBodies, MemorySentLog

HOST = "mx.daum.test"  # our hostname: the authserv-id of our Authentication-Results:
MESSAGE = (
    b"Received: from out.example.test by mx.daum.test; Mon, 7 Dec 2026 05:00:00 +0000\r\n"
    b"Authentication-Results: mx.daum.test; spf=pass smtp.mailfrom=x@example.test\r\n"
    b"From: X <x@example.test>\r\nTo: team@daum.test\r\nSubject: hi\r\n"
    b"Date: Mon, 7 Dec 2026 05:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nHello team\r\n"
)


@pytest.fixture
async def world(tmp_path, store):
    published = store.add_dkim("daum.test", "k1")
    dns = {f"{r.selector}._domainkey.daum.test.".encode(): r.txt().encode() for r in published.records}
    with RemoteMta(tmp_path, starttls=False) as mta:
        remote = RemoteConfig(port=mta.port, helo=HOST, tls=smtp_out.TlsPolicy("none"), timeouts=smtp_out.Timeouts(2, 2, 2, 2, 2))
        signer = Signer(store)
        bodies, sent = MemoryBodies(), MemorySentLog()
        d = Deliveries(store, store, bodies, LoopbackMx(), sent, remote, signer=signer, forwarder=Forwarder(signer, HOST))
        yield d, bodies, mta, dns


async def jobs(bodies, qid: str, rcpts: list[Recipient], body: bytes = MESSAGE) -> list[DeliveryJob]:
    ref = await bodies.put(qid, body)
    return [
        DeliveryJob(queue_id=qid, trace_id="t", attempt=1, mail_from="x@example.test", rcpt=r, body_ref=ref, size=len(body), received_at=datetime.now(UTC))
        for r in rcpts
    ]


def forwarded(address: str, alias: str = "team@daum.test") -> Recipient:
    return Recipient(address=address, orcpt=f"rfc822;{alias}", forwarded_for=alias)


async def test_a_forwarded_copy_leaves_in_its_own_transaction_with_the_original_sender_once(world):
    d, bodies, mta, _ = world
    batch = await jobs(bodies, "F1", [Recipient(address="z@naver.test"), forwarded("carol@naver.test"), forwarded("dave@naver.test")])
    results, _ = await d.run(batch)
    assert [(r.rcpt, r.outcome) for r in results] == [(a, "delivered") for a in ("z@naver.test", "carol@naver.test", "dave@naver.test")]
    got = sorted((m.rcpts, m.mail_from) for m in mta.messages)
    assert got == [(["carol@naver.test", "dave@naver.test"], "x@example.test"), (["z@naver.test"], "x@example.test")]
    again, _ = await d.run(batch)  # JetStream redelivered the jobs after a crash: the sent log answers
    assert [r.outcome for r in again] == ["delivered"] * 3 and len(mta.messages) == 2


async def test_a_copy_that_went_round_too_often_bounces(world):
    d, bodies, mta, _ = world
    looped = b"Received: from a by b; Mon, 7 Dec 2026 05:00:00 +0000\r\n" * 101 + MESSAGE
    (r,), _ = await d.run(await jobs(bodies, "F2", [forwarded("carol@naver.test")], looped))
    assert (r.outcome, r.status) == ("bounced", "5.4.6") and "loop" in r.diagnostic
    assert mta.messages == []


def arc_verdict(data: bytes, dns: dict) -> tuple[str, str]:
    """dkimpy's arc_verify (an independent verifier): (cv, reason)."""
    cv, _, reason = dkimpy.arc_verify(data, dnsfunc=lambda name, timeout=5: dns.get(name))
    return cv.decode(), reason


async def test_a_forwarded_copy_is_arc_sealed_with_the_alias_domain_key_and_carries_our_results(world):
    d, bodies, mta, dns = world
    batch = await jobs(bodies, "F3", [Recipient(address="z@naver.test"), forwarded("carol@naver.test")])
    await d.run(batch)
    got = {m.rcpts[0]: m.data for m in mta.messages}
    sealed = got["carol@naver.test"]
    assert arc_verdict(sealed, dns) == ("pass", "success")
    assert sealed.startswith(b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=daum.test;")
    aar = sealed.split(b"ARC-Authentication-Results:", 1)[1].split(b"\r\nReceived:", 1)[0]
    assert aar == b" i=1; mx.daum.test;\r\n\tspf=pass smtp.mailfrom=x@example.test"
    assert b"ARC-" not in got["z@naver.test"]  # the client named z itself: no forwarding, no seal
    tampered = sealed.replace(b"Hello team", b"Hello tean")
    assert arc_verdict(tampered, dns)[0] == "fail"


async def test_a_copy_of_a_domain_without_keys_or_of_a_chain_we_did_not_judge_leaves_unsealed(world, store):
    d, bodies, mta, _ = world
    store.add_domain("nokey.test")
    foreign = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.test; s=s; b=AAAA\r\n" + MESSAGE
    batch = await jobs(bodies, "F4", [forwarded("carol@naver.test", "list@nokey.test")])
    batch += await jobs(bodies, "F5", [forwarded("dave@naver.test")], foreign)
    results, _ = await d.run(batch)
    assert [r.outcome for r in results] == ["delivered", "delivered"]
    sealed = {m.rcpts[0]: m.data.startswith(b"ARC-Seal") for m in mta.messages}  # the two go concurrently
    assert sealed == {"carol@naver.test": False, "dave@naver.test": True}  # F5: the foreign seal only
    assert all(m.data.count(b"ARC-Seal:") <= 1 for m in mta.messages)


async def test_the_store_unable_to_give_the_key_defers(world, store):
    d, bodies, mta, _ = world
    down = KeylessStore(store.local)
    d.forwarder = Forwarder(Signer(down), HOST)
    (r,), _ = await d.run(await jobs(bodies, "F6", [forwarded("carol@naver.test")]))
    assert (r.outcome, r.status) == ("deferred", "4.3.0") and "ARC" in r.diagnostic
    assert mta.messages == []
    await down.close()
