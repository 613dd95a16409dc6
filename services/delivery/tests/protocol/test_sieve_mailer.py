"""What Sieve sends enters the queue like any message: JetStreamMailer on a real nats-server puts a
small body inside the envelope and a large one into stream BODY, and the same queue id published twice
is one message in MAIL (JetStream's duplicate window; the queue's ledger keeps one per queue id too)."""

from __future__ import annotations

from mailflow.bodies import JetStreamBodies
from mailflow.contracts import streams
from mailflow.contracts.messages import QueuedMessages
from mailflow_delivery.sieve import JetStreamMailer, Outgoing


async def test_small_and_large_messages_enter_mail_once(js):
    bodies = JetStreamBodies(js)
    mailer = JetStreamMailer(js, bodies)
    small = Outgoing("SMALLQUEUEID0001", "", "carol@elsewhere.test", b"Subject: away\r\n\r\nBack soon.\r\n", "vacation")
    large = Outgoing("LARGEQUEUEID0001", "carol@elsewhere.test", "boss@elsewhere.test", b"Subject: big\r\n\r\n" + b"x" * 400_000, "redirect", "carol@daum.test")
    await mailer.send(small, "trace-1")
    await mailer.send(small, "trace-1")  # a retried job queues it again: dropped as a duplicate
    await mailer.send(large, "trace-1")
    stream, durable = streams.QUEUE_INTAKE  # the queue's intake, as the queue reads it
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    got = []
    for m in await sub.fetch(10, timeout=2):
        await m.ack()
        got += QueuedMessages.from_bytes(m.data).messages
    assert [(q.queue_id, q.mail_from, [r.address for r in q.rcpt_to]) for q in got] == [
        ("SMALLQUEUEID0001", "", ["carol@elsewhere.test"]),
        ("LARGEQUEUEID0001", "carol@elsewhere.test", ["boss@elsewhere.test"]),
    ]
    assert [r.forwarded_for for q in got for r in q.rcpt_to] == [None, "carol@daum.test"]  # ARC-sealed on its way
    assert got[0].body == small.body and got[0].body_ref.startswith("inline:")
    assert got[1].body is None and await bodies.get(got[1].body_ref) == large.body
