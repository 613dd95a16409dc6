"""smtp-ingress against a real nats-server with JetStream: 250 only once body and envelope are durable.

The directory is the real mailbox-store in this process (the `directory` fixture, tests/conftest.py).
Clients are real smtplib sessions, run in a thread while the service runs in the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import time

import httpx
import pytest

from mailflow.bodies import JetStreamBodies
from mailflow.contracts.messages import QueuedMessage, QueuedMessages, TraceEvent
from mailflow_smtp_ingress import app
from tests.support import await_for
from tests.support.dns import DnsServer
from tests.support.resolver import resolver_service

# No resolver service runs here: the sender authentication checks would get no DNS answer (451). They
# have tests of their own (tests/protocol/test_authentication.py, and through the resolver below).
NO_CHECKS = dict(check_spf="off", check_dkim="off", check_arc="off", check_dmarc="off")


@contextlib.asynccontextmanager
async def serving(settings, directory):
    """The whole service (app.run) until the block ends; yields its `Running` (smtp, http_port)."""
    stop = asyncio.Event()
    started = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.run(settings, stop, directory=directory, started=started))
    try:
        yield await asyncio.wait_for(started, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def service(nats_url, js, settings_factory, directory):
    """The whole service on free ports, the streams made (by `js`, as the queue would); yields (server, http_port)."""
    async with serving(settings_factory(nats_url=nats_url, publish_timeout=2.0, **NO_CHECKS), directory) as running:
        yield running.smtp, running.http_port


def send(
    port: int, raw: bytes, rcpts=("alice@example.test",), sender="carol@elsewhere.test"
) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, text
        return s.data(raw)


async def test_accepted_message_is_in_jetstream(service, js):
    server, _ = service
    raw = b"From: carol@elsewhere.test\r\nSubject: durable\r\n\r\nHello JetStream\r\n"
    code, text = await asyncio.to_thread(send, server.port("mx"), raw)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.decode().rsplit(" ", 1)[1]

    stored = await js.get_msg("MAIL", seq=1)
    assert stored.headers["Nats-Msg-Id"] == queue_id  # a group of one envelope: JetStream drops a re-publish
    (msg,) = QueuedMessages.from_bytes(stored.data).messages
    assert msg.queue_id == queue_id and len(msg.trace_id) == 32
    assert msg.mail_from == "carol@elsewhere.test" and msg.rcpt_to[0].address == "alice@example.test"
    # a small body travels inside the envelope: one JetStream write, nothing in stream BODY
    body = msg.body
    assert body.endswith(raw) and body.startswith(b"Received: from client.example.test")
    assert msg.size == len(body) and msg.body_ref == f"inline:{queue_id}:{len(body)}"
    assert (await js.stream_info("BODY")).state.messages == 0

    async def traced():
        return (await js.stream_info("TRACE")).state.messages

    await await_for(traced, what="the trace event")  # trace events are sent in small batches
    trace = TraceEvent.from_bytes((await js.get_msg("TRACE", seq=1)).data)
    assert trace.step == "ingress" and trace.queue_id == queue_id and trace.trace_id == msg.trace_id


async def test_a_body_above_the_inline_limit_goes_to_stream_body_first(nats_url, settings_factory, directory, js):
    settings = settings_factory(nats_url=nats_url, publish_timeout=2.0, inline_max_bytes=1000, **NO_CHECKS)
    async with serving(settings, directory) as running:
        small, large = b"Subject: small\r\n\r\nhi\r\n", b"Subject: large\r\n\r\n" + b"x" * 998 + b"\r\n"
        for raw in (small, large):
            code, _ = await asyncio.to_thread(send, running.smtp.port("mx"), raw)
            assert code == 250
        ((first,), (second,)) = [QueuedMessages.from_bytes((await js.get_msg("MAIL", seq=n)).data).messages for n in (1, 2)]
        assert first.body is not None and first.body.endswith(small)
        assert second.body is None and second.body_ref.startswith("nats:")
        body = await JetStreamBodies(js).get(second.body_ref)
        assert body.endswith(large) and len(body) == second.size


async def test_25_mib_message_goes_through_in_chunks(service, js):
    server, _ = service
    settings = server.settings
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    head = b"Subject: big\r\n\r\n"
    room = settings.max_message_bytes - len(head) - 4096  # leave room for smtplib's final CRLF
    raw = head + line * (room // len(line))
    code, text = await asyncio.to_thread(send, server.port("mx"), raw)
    assert code == 250, text
    (msg,) = QueuedMessages.from_bytes((await js.get_msg("MAIL", seq=1)).data).messages
    assert int(msg.body_ref.split(":")[2]) > 40  # many chunks below NATS's max_payload
    body = await JetStreamBodies(js).get(msg.body_ref)
    assert body.endswith(raw) and len(body) == msg.size


async def test_oversized_message_is_552_and_not_queued(service, js):
    server, _ = service
    settings = server.settings
    raw = b"Subject: too big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (settings.max_message_bytes // 1000 + 10)
    code, text = await asyncio.to_thread(send, server.port("mx"), raw)
    assert code == 552 and text.startswith(b"5.3.4")
    assert (await js.stream_info("MAIL")).state.messages == 0


async def test_nats_gone_is_451_at_once_and_that_message_is_never_stored(nats_server, settings_factory, directory, js):
    """NATS crashes: the next message is refused with 451 4.3.0 at once (not after publish_timeout) and
    nothing of it waits in a buffer: once NATS is back, only the message sent then is in MAIL."""
    settings = settings_factory(nats_url=nats_server.url, publish_timeout=20.0, **NO_CHECKS)
    async with serving(settings, directory) as running:
        port = running.smtp.port("mx")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as http:

            async def nats_ready() -> bool:
                return (await http.get("/readyz")).json()["ready"] and js._nc.is_connected

            async def nats_gone() -> bool:
                return not await nats_ready()

            nats_server.kill()
            await await_for(nats_gone, what="smtp-ingress saw NATS go")
            t0 = time.monotonic()
            code, text = await asyncio.to_thread(send, port, b"Subject: refused\r\n\r\nbody\r\n")
            assert code == 451 and text.startswith(b"4.3.0")
            assert time.monotonic() - t0 < settings.publish_timeout / 2
            nats_server.start()
            await await_for(nats_ready, timeout=30, what="smtp-ingress reconnected")
        code, text = await asyncio.to_thread(send, port, b"Subject: accepted\r\n\r\nbody\r\n")
        assert code == 250
        queue_id = text.decode().rsplit(" ", 1)[1]
    assert (await js.stream_info("MAIL")).state.messages == 1
    (msg,) = QueuedMessages.from_bytes((await js.get_msg("MAIL", seq=1)).data).messages
    assert msg.queue_id == queue_id


async def test_health_and_metrics(service):
    server, http_port = service
    await asyncio.to_thread(send, server.port("mx"), b"Subject: m\r\n\r\nbody\r\n")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json()["ready"] is True
        text = (await http.get("/metrics")).text
    assert 'mailflow_smtp_messages_accepted_total{listener="mx"}' in text
    assert "mailflow_smtp_accept_duration_seconds_bucket" in text
    assert 'mailflow_smtp_sessions_total{listener="mx"}' in text


async def test_envelopes_finished_together_go_in_one_group(js):
    """Group commit: what is submitted while nothing is being sent yet leaves as one QueuedMessages
    message (one write, one fsync); each submit returns once that message is PubAck'ed."""
    from mailflow.contracts import subjects
    from mailflow.contracts.messages import Recipient
    from mailflow.contracts.streams import ensure_streams
    from mailflow_smtp_ingress.queueing import EnvelopeGroups

    await ensure_streams(js)
    groups = EnvelopeGroups(js, timeout=5.0)
    envelopes = [
        QueuedMessage(queue_id=f"G{n}", trace_id="t", mail_from="", rcpt_to=[Recipient(address="a@example.test")], body_ref=f"inline:G{n}:2", size=2, body=b"hi")
        for n in range(10)
    ]
    await asyncio.gather(*(groups.submit(e) for e in envelopes))
    info = await js.stream_info("MAIL")
    assert info.state.messages == 1
    stored = await js.get_msg("MAIL", seq=1)
    assert stored.subject == subjects.MAIL_QUEUED
    assert [m.queue_id for m in QueuedMessages.from_bytes(stored.data).messages] == [f"G{n}" for n in range(10)]
    assert stored.headers["Nats-Msg-Id"].startswith("mail/")  # a digest of the ten queue ids
    # the next envelope, with nothing in flight, leaves alone and at once
    await groups.submit(envelopes[0].model_copy(update={"queue_id": "G10"}))
    assert (await js.stream_info("MAIL")).state.messages == 2


async def test_a_group_stays_below_its_byte_limit(js):
    """Big inline bodies (base64 in JSON) leave in groups of at most max_bytes, far below NATS's 1 MB."""
    from mailflow.contracts.messages import Recipient
    from mailflow.contracts.streams import ensure_streams
    from mailflow_smtp_ingress.queueing import EnvelopeGroups

    await ensure_streams(js)
    groups = EnvelopeGroups(js, timeout=5.0)
    body = bytes(range(256)) * 800  # 200 KiB: 267 KiB of base64
    envelopes = [
        QueuedMessage(queue_id=f"B{n}", trace_id="t", mail_from="", rcpt_to=[Recipient(address="a@example.test")], body_ref=f"inline:B{n}:{len(body)}", size=len(body), body=body)
        for n in range(4)
    ]
    await asyncio.gather(*(groups.submit(e) for e in envelopes))
    sizes = []
    for seq in range(1, (await js.stream_info("MAIL")).state.messages + 1):
        stored = await js.get_msg("MAIL", seq=seq)
        sizes.append((len(QueuedMessages.from_bytes(stored.data).messages), len(stored.data)))
    assert [n for n, _ in sizes] == [1, 1, 1, 1] and all(size <= groups.max_bytes for _, size in sizes)


async def test_the_250_comes_after_the_group_is_durable(nats_url, settings_factory, directory, js):
    """The queue waits for envelopes (a pull request on its durable): the message arrives as a group on
    mail.queued, and it is there when the client has its 250."""
    from mailflow.contracts import subjects
    from mailflow.contracts.streams import QUEUE_INTAKE, ensure_streams

    await ensure_streams(js)
    sub = await js.pull_subscribe_bind(durable=QUEUE_INTAKE[1], stream=QUEUE_INTAKE[0])
    waiting = asyncio.ensure_future(sub.fetch(1, timeout=20))  # the queue asking for envelopes

    async def reader_live():
        return (await js.consumer_info(*QUEUE_INTAKE)).num_waiting > 0

    await await_for(reader_live, what="a waiting pull request")
    settings = settings_factory(nats_url=nats_url, publish_timeout=2.0, **NO_CHECKS)
    async with serving(settings, directory) as running:
        code, text = await asyncio.to_thread(send, running.smtp.port("mx"), b"Subject: grouped\r\n\r\nhi\r\n")
        assert code == 250
        queue_id = text.decode().rsplit(" ", 1)[1]
        (m,) = await waiting
        assert m.subject == subjects.MAIL_QUEUED
        assert [e.queue_id for e in QueuedMessages.from_bytes(m.data).messages] == [queue_id]


async def test_sender_authentication_asks_dns_through_the_resolver_service(nats_url, settings_factory, directory, js):
    """The wiring of app.py with the checks on (the defaults: DMARC enforced): DNS questions go to the
    resolver service over NATS, which asks the DNS server the test started."""
    zone = 'daum.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"\n_dmarc.daum.test. 300 IN TXT "v=DMARC1; p=reject"\n'
    with DnsServer(zone) as dns:
        async with resolver_service(nats_url, dns, probe=("daum.test", "TXT")):
            async with serving(settings_factory(nats_url=nats_url, publish_timeout=2.0), directory) as running:
                port = running.smtp.port("mx")
                forged = b"From: boss@daum.test\r\nSubject: pay this\r\n\r\nNow.\r\n"
                code, text = await asyncio.to_thread(send, port, forged, sender="x@elsewhere.test")
                assert (code, text) == (550, b"5.7.1 Rejected by the DMARC policy of the From domain (daum.test)")
                code, _ = await asyncio.to_thread(send, port, forged, sender="boss@daum.test")
                assert code == 250
    (msg,) = QueuedMessages.from_bytes((await js.get_msg("MAIL", seq=1)).data).messages
    assert b"\r\nAuthentication-Results: mx.example.test;\r\n" in msg.body
    assert b"\tdmarc=pass (p=reject dis=none)" in msg.body
    assert ("_dmarc.daum.test", "TXT") in dns.queries
