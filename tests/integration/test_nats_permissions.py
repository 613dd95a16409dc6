"""NATS as a trust boundary (issue 12 §8), against a real nats-server configured from contracts/permissions.py.

Each service's user can do its job (the same calls the services make: bodies, envelopes, pulls and acks,
direct gets, the sent-log bucket, DNS request/reply, mailbox hints) and nothing else: what it may not do
is refused by the server, reported as a permissions violation, and leaves the streams as they were.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest

from mailflow import natsauth, natsconn
from mailflow.bodies import JetStreamBodies
from mailflow.contracts import streams, subjects
from mailflow.contracts.messages import DnsAnswer, DnsQuery, MxReply, MxRequest
from mailflow.contracts.permissions import GRANTS
from mailflow.natsserver import NatsServer
from mailflow.pull import Puller
from tests.support import await_for, free_port

INSTALLATION = "mf"


@pytest.fixture
def server(tmp_path):
    passwords = {s: natsauth.new_password() for s in GRANTS}
    srv = NatsServer(tmp_path / "nats", port=free_port(), auth=natsauth.accounts(INSTALLATION, passwords)).start()
    srv.passwords = passwords
    yield srv
    srv.stop()


@pytest.fixture
async def login(server):
    """login(service): a connection as that service's user (named as the service, for its inbox)."""
    conns = []

    async def connect(service: str):
        nc = await natsconn.connect(
            server.url, service, initial_timeout=5,
            user=natsauth.user_name(INSTALLATION, service), password=server.passwords[service],
        )  # fmt: skip
        conns.append(nc)
        return nc

    yield connect
    for nc in conns:
        await natsconn.close(nc)


@pytest.fixture
async def queue(login):
    """The queue's connection, with the streams applied (only the queue may)."""
    nc = await login("queue")
    await streams.ensure_streams(nc.jetstream())
    return nc


@pytest.fixture
def violations(caplog):
    """refused(what): waits until the server reported a permissions violation for `what`
    (e.g. 'publish to "delivery.job"'), as natsconn logs it."""
    caplog.set_level(logging.WARNING, logger="mailflow.natsconn")

    async def refused(what: str) -> None:
        async def seen() -> bool:
            return f"permissions violation for {what}".lower() in caplog.text.lower()

        await await_for(seen, timeout=5, what=f"a permissions violation for {what}")

    return refused


async def ask(nc, subject: str, data: bytes):
    """A request, asked again while the server says no responders: now and then (a few runs in ten of
    this module, never alone) the first request after the responder's subscribe+flush finds none yet."""
    for _ in range(50):
        try:
            return await nc.request(subject, data, timeout=5)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
    return await nc.request(subject, data, timeout=5)


async def heard(sub, publish) -> bytes:
    """The next message on `sub`, published again every 0.2 s until one comes (as `ask`, for the same
    rare first message that finds no subscriber yet)."""
    for _ in range(25):
        await publish()
        try:
            return (await sub.next_msg(timeout=0.2)).data
        except nats.errors.TimeoutError:
            continue
    raise AssertionError(f"nothing came on {sub.subject}")


async def messages(queue_nc, stream: str) -> int:
    return (await queue_nc.jetstream().stream_info(stream)).state.messages


# --- each user can do its job ---------------------------------------------------------------------


async def test_smtp_ingress_queues_a_message(queue, login):
    nc = await login("smtp-ingress")
    js = nc.jetstream()
    await streams.wait_for(js, ("BODY", "MAIL"))
    ref = await JetStreamBodies(js).put("Q1", b"Subject: hi\r\n\r\nhello\r\n")
    ack = await js.publish(subjects.MAIL_QUEUED, b"{}", headers={"Nats-Msg-Id": "Q1"})
    assert ack.stream == "MAIL"
    await nc.publish(subjects.trace("Q1"), b"{}")
    await nc.flush()
    assert await JetStreamBodies(queue.jetstream()).get(ref) == b"Subject: hi\r\n\r\nhello\r\n"
    assert await messages(queue, "MAIL") == 1


async def test_queue_takes_mail_and_hands_jobs_to_delivery(queue, login):
    smtp = await login("smtp-ingress")
    await smtp.jetstream().publish(subjects.MAIL_QUEUED, b"envelope")
    intake = await Puller(queue, *streams.QUEUE_INTAKE).start()
    (m,) = await intake.fetch(1, wait=5)
    await m.ack_sync()
    qjs = queue.jetstream()
    await qjs.publish(subjects.DELIVERY_JOB, b"job")
    assert await messages(queue, "MAIL") == 0

    delivery = await login("delivery")
    djs = delivery.jetstream()
    await streams.wait_for(djs, ("BODY", "JOBS", "RESULTS", "DEAD"), (streams.DELIVERY,))
    jobs = await Puller(delivery, *streams.DELIVERY).start()
    (job,) = await jobs.fetch(1, wait=5)
    assert job.data == b"job"
    await job.in_progress()
    await djs.publish(subjects.DELIVERY_RESULT, b"result")
    await djs.publish(subjects.MAIL_DEAD, b"letter")
    await job.ack_sync()
    assert await messages(queue, "JOBS") == 0

    results = await Puller(queue, *streams.QUEUE_RESULTS).start()
    (r,) = await results.fetch(1, wait=5)
    assert r.data == b"result"
    await r.ack_sync()
    dead = await qjs.get_msg("DEAD", 1)  # the operator's view through the queue (mailflow dead)
    assert dead.data == b"letter"
    await qjs.delete_msg("DEAD", 1)


async def test_delivery_reads_bodies_and_keeps_its_sent_log(queue, login):
    from mailflow.contracts.messages import DeliveryResult
    from mailflow_delivery.sentlog import KvSentLog

    smtp = await login("smtp-ingress")
    ref = await JetStreamBodies(smtp.jetstream()).put("Q2", b"body")
    delivery = await login("delivery")
    djs = delivery.jetstream()
    assert await JetStreamBodies(djs).get(ref) == b"body"
    sent = await KvSentLog.open(djs)
    result = DeliveryResult(queue_id="Q2", rcpt="a@b.test", attempt=1, outcome="delivered", status="2.0.0")
    await sent.put("Q2/a@b.test", result)
    assert await sent.get("Q2/a@b.test") == result
    await JetStreamBodies(queue.jetstream()).delete(ref)  # the queue purges what is done


async def test_delivery_keeps_mta_sts_policies_and_asks_their_dns_questions(queue, login):
    from mailflow_delivery.mtasts import KvPolicyStore

    resolver, delivery = await login("resolver"), await login("delivery")
    policies = await KvPolicyStore.open(delivery.jetstream())
    await policies.put("b.test", b'{"id": "1"}')
    assert await policies.get("b.test") == b'{"id": "1"}'

    async def answer(msg):
        await msg.respond(DnsAnswer(name="_mta-sts.b.test", type="TXT", status="ok", records=["v=STSv1; id=1"]).to_bytes())

    await resolver.subscribe(subjects.DNS_QUERY, queue="resolver", cb=answer)
    await resolver.flush()
    reply = await ask(delivery, subjects.DNS_QUERY, DnsQuery(name="_mta-sts.b.test", type="TXT").to_bytes())
    assert DnsAnswer.from_bytes(reply.data).records == ["v=STSv1; id=1"]


async def test_delivery_asks_the_resolver(login):
    resolver, delivery = await login("resolver"), await login("delivery")

    async def answer(msg):
        await msg.respond(MxReply(domain="b.test", status="ok", hosts=[]).to_bytes())

    await resolver.subscribe(subjects.MX_LOOKUP, queue="resolver", cb=answer)
    await resolver.flush()
    reply = await ask(delivery, subjects.MX_LOOKUP, MxRequest(domain="b.test").to_bytes())
    assert MxReply.from_bytes(reply.data).domain == "b.test"


async def test_delivery_asks_the_resolver_for_tlsa_records(login):
    resolver, delivery = await login("resolver"), await login("delivery")

    async def answer(msg):
        await msg.respond(DnsAnswer(name="_25._tcp.mx.b.test", type="TLSA", status="ok", records=["3 1 1 " + "ab" * 32], secure=True).to_bytes())

    await resolver.subscribe(subjects.DNS_QUERY, queue="resolver", cb=answer)
    await resolver.flush()
    reply = await ask(delivery, subjects.DNS_QUERY, DnsQuery(name="_25._tcp.mx.b.test", type="TLSA").to_bytes())
    assert DnsAnswer.from_bytes(reply.data).secure


async def test_smtp_ingress_asks_the_resolver_dns_questions(login):
    resolver, smtp = await login("resolver"), await login("smtp-ingress")

    async def answer(msg):
        await msg.respond(DnsAnswer(name="b.test", type="TXT", status="ok", records=["v=spf1 -all"]).to_bytes())

    await resolver.subscribe(subjects.DNS_QUERY, queue="resolver", cb=answer)
    await resolver.flush()
    reply = await ask(smtp, subjects.DNS_QUERY, DnsQuery(name="b.test", type="TXT").to_bytes())
    assert DnsAnswer.from_bytes(reply.data).records == ["v=spf1 -all"]


async def test_the_store_tells_imap_pop3(login):
    store, imap = await login("mailbox-store"), await login("imap-pop3")
    events = await imap.subscribe(subjects.mailbox_events(7))
    revoked = await imap.subscribe(subjects.USER_REVOKED)
    await imap.flush()
    await store.publish(subjects.trace("Q3"), b"{}")
    assert await heard(events, lambda: store.publish(subjects.mailbox_events(7), b"changed")) == b"changed"
    assert await heard(revoked, lambda: store.publish(subjects.USER_REVOKED, b"user 7")) == b"user 7"


# --- and nothing else -----------------------------------------------------------------------------


async def test_smtp_ingress_cannot_publish_jobs_consume_mail_or_manage_streams(queue, login, violations):
    smtp = await login("smtp-ingress")
    js = smtp.jetstream(timeout=1)
    await js.publish(subjects.MAIL_QUEUED, b"envelope")
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(subjects.DELIVERY_JOB, b"forged job", timeout=1)
    await violations(f'publish to "{subjects.DELIVERY_JOB}"')
    assert await messages(queue, "JOBS") == 0

    stolen = await Puller(smtp, *streams.QUEUE_INTAKE).start()
    assert await stolen.fetch(1, wait=0.5) == []
    await violations('publish to "$JS.API.CONSUMER.MSG.NEXT.MAIL.queue"')
    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream("MAIL")
    await violations('publish to "$JS.API.STREAM.DELETE.MAIL"')
    with pytest.raises(nats.errors.TimeoutError):
        await js.purge_stream("BODY")
    assert await messages(queue, "MAIL") == 1  # still there, still the queue's

    await smtp.subscribe(subjects.MAIL_QUEUED)
    await violations(f'subscription to "{subjects.MAIL_QUEUED}"')
    await smtp.subscribe("_INBOX.delivery.>")  # pulled jobs go to delivery's inbox: not readable here
    await violations('subscription to "_INBOX.delivery.>"')


async def test_imap_pop3_cannot_publish_mail_or_events(queue, login, violations):
    imap = await login("imap-pop3")
    with pytest.raises(nats.errors.TimeoutError):
        await imap.jetstream().publish(subjects.MAIL_QUEUED, b"forged", timeout=1)
    await violations(f'publish to "{subjects.MAIL_QUEUED}"')
    await imap.publish(subjects.USER_REVOKED, b"forged")
    await violations(f'publish to "{subjects.USER_REVOKED}"')
    await imap.publish(subjects.DNS_QUERY, b"forged")  # only smtp-ingress asks DNS questions
    await violations(f'publish to "{subjects.DNS_QUERY}"')
    assert await messages(queue, "MAIL") == 0


async def test_resolver_only_answers(queue, login, violations):
    resolver = await login("resolver")
    await resolver.publish(subjects.MAIL_QUEUED, b"forged")
    await violations(f'publish to "{subjects.MAIL_QUEUED}"')
    await resolver.subscribe(subjects.mailbox_events(1))
    await violations(f'subscription to "{subjects.mailbox_events(1)}"')
    assert await messages(queue, "MAIL") == 0


async def test_delivery_cannot_make_streams(queue, login, violations):
    """Delivery may queue mail (what Sieve sends: redirect, reject, vacation; it sends mail out anyway),
    but it cannot make streams of its own."""
    djs = (await login("delivery")).jetstream(timeout=1)
    with pytest.raises(nats.errors.TimeoutError):
        await djs.add_stream(name="SIDE", subjects=["side.>"])
    await violations('publish to "$JS.API.STREAM.CREATE.SIDE"')


async def test_store_cannot_queue_mail(queue, login, violations):
    store = await login("mailbox-store")
    await store.publish(subjects.DELIVERY_JOB, b"forged")
    await violations(f'publish to "{subjects.DELIVERY_JOB}"')
    assert await messages(queue, "JOBS") == 0


async def test_no_login_or_a_wrong_password_is_refused(server):
    with pytest.raises(nats.errors.Error, match="Authorization"):
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(nats.errors.Error, match="Authorization"):
        await nats.connect(
            server.url, user=natsauth.user_name(INSTALLATION, "queue"), password="n" + "0" * 64,
            allow_reconnect=False, connect_timeout=2,
        )  # fmt: skip
