"""Signing where remote mail leaves: the real mailbox-store holds the keys, an SMTP server on loopback
is the remote MX, and dkimpy (not our signer) verifies what it received against the published records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow_delivery import smtp_out
from mailflow_delivery.dkim import Signer
from mailflow_delivery.routing import Deliveries, RemoteConfig
from services.delivery.tests.support import KeylessStore, LoopbackMx, RemoteMta
from services.delivery.tests.support import dkim_verdicts as verdicts
from tests.support.doubles import MemoryBodies, MemorySentLog


@pytest.fixture
async def world(tmp_path, store):
    published = store.add_dkim("daum.test", "k1")
    store.add_domain("other.test")
    dns = {f"{r.selector}._domainkey.daum.test.".encode(): r.txt().encode() for r in published.records}
    with RemoteMta(tmp_path, starttls=False) as mta:
        remote = RemoteConfig(port=mta.port, helo="mx.daum.test", tls=smtp_out.TlsPolicy("none"), timeouts=smtp_out.Timeouts(2, 2, 2, 2, 2))
        bodies = MemoryBodies()
        d = Deliveries(store, store, bodies, LoopbackMx(), MemorySentLog(), remote, signer=Signer(store))
        yield d, bodies, mta, dns


async def job(bodies, qid, sender, signed, rcpt="z@naver.test"):
    body = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: hi\r\n\r\nHello\r\n".encode()
    ref = await bodies.put(qid, body)
    return DeliveryJob(queue_id=qid, trace_id="t", attempt=1, mail_from=sender, rcpt=Recipient(address=rcpt), body_ref=ref, size=len(body), received_at=datetime.now(UTC), dkim=signed)


async def test_signed_when_marked_and_ours_only(world):
    d, bodies, mta, dns = world
    jobs = [
        await job(bodies, "S1", "alice@daum.test", True),  # submitted after AUTH (or a DSN)
        await job(bodies, "S2", "dave@daum.test", False),  # relayed for someone else: never signed
        await job(bodies, "S3", "bob@other.test", True),  # ours, but no key for other.test
        await job(bodies, "S4", "carol@sub.daum.test", True),  # a subdomain: signed by the parent's key
    ]
    results, _ = await d.run(jobs)
    assert [r.outcome for r in results] == ["delivered"] * 4
    got = {m.mail_from: m.data for m in mta.messages}
    both = [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
    assert verdicts(got["alice@daum.test"], dns) == both
    assert verdicts(got["carol@sub.daum.test"], dns) == both
    assert b"d=daum.test;" in got["carol@sub.daum.test"]
    assert b"DKIM-Signature" not in got["dave@daum.test"] + got["bob@other.test"]
    tampered = got["alice@daum.test"].replace(b"Hello", b"Hellp")
    assert verdicts(tampered, dns) == [(b"rsa-sha256", False), (b"ed25519-sha256", False)]


async def test_no_key_answer_defers_never_sends_unsigned(world, store):
    d, bodies, mta, _ = world
    down = KeylessStore(store.local)
    d.signer = Signer(down)
    (r,), _ = await d.run([await job(bodies, "S5", "alice@daum.test", True)])
    assert (r.outcome, r.status) == ("deferred", "4.3.0") and "DKIM" in r.diagnostic
    assert mta.messages == []
    await down.close()
