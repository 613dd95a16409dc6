"""delivery's pure parts: wire format, reply codes, the store-answer table, domain routes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from mailflow.contracts.messages import DeliveryJob, DeliveryResult, Recipient
from mailflow.errors import ServiceUnavailable
from mailflow.store.api import DeliverResult, Resolution
from mailflow_delivery import smtp_out
from mailflow_delivery.routing import Deliveries, DomainRoutes, domain_of
from mailflow_delivery.worker import result_msg_id


@pytest.mark.parametrize(
    "raw,wire",
    [
        (b".a\r\n.b\nc", b"..a\r\n..b\r\nc\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"x\r\n", b"x\r\n.\r\n"),
        (b"a\r\n..\r\n", b"a\r\n...\r\n.\r\n"),
    ],
)
def test_wire_data(raw, wire):
    assert smtp_out.wire_data(raw) == wire


@pytest.mark.parametrize(
    "code,text,status",
    [(550, "5.1.1 no such user", "5.1.1"), (451, "try later", "4.0.0"), (250, "4.1.1 wrong class", "2.0.0"), (552, "5.2.2 full", "5.2.2"),
     # found by the dsn fuzz target: Unicode digits are no status code (the Status: field of a DSN is ASCII)
     (550, "5.1.\u0661 no such user", "5.0.0"), (451, "4.\u0664.1 later", "4.0.0")],
)
def test_reply_status(code, text, status):
    assert smtp_out.Reply(code, (text,)).status == status


@pytest.mark.parametrize("wire", [b"\xd9\xa5\xd9\xa5\xd9\xa0 5.0.0 no\r\n", b"55\xc2\xb2 x\r\n"])
async def test_reply_code_in_other_digits_is_malformed(wire):
    """A reply code is three ASCII digits: '٥٥٠' or '55²' are not 550 (found by fuzzing DSN inputs)."""
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    with pytest.raises(smtp_out.Unreachable, match="malformed"):
        await smtp_out.Connection(reader, None, smtp_out.Timeouts()).reply(5)


JOB = DeliveryJob(queue_id="Q", trace_id="t", attempt=3, mail_from="a@b.test", rcpt=Recipient(address="Z@X.test"), body_ref="nats:Q:1:1", size=1, received_at=datetime.now(UTC))


@pytest.mark.parametrize(
    "answer,outcome,status",
    [
        (DeliverResult("k", "stored"), "delivered", "2.0.0"),
        (DeliverResult("k", "duplicate"), "delivered", "2.0.0"),
        (DeliverResult("k", "unknown_user"), "bounced", "5.1.1"),
        (DeliverResult("k", "quota_exceeded", permanent=True), "bounced", "5.2.2"),
        (DeliverResult("k", "quota_exceeded"), "deferred", "4.2.2"),
        (DeliverResult("k", "failed", detail="disk"), "deferred", "4.3.0"),
    ],
)
def test_store_answers(answer, outcome, status):
    r = Deliveries._stored(JOB, answer)
    assert (r.outcome, r.status, r.attempt, r.rcpt) == (outcome, status, 3, "Z@X.test")


def test_ids_and_domains():
    assert domain_of("Z@X.Test.") == "x.test"
    r = DeliveryResult(queue_id="Q", rcpt="Z@X.test", attempt=2, outcome="deferred", status="4.0.0")
    assert result_msg_id(r) == "Q/z@x.test/2/deferred"
    assert JOB.idempotency_key == "Q/z@x.test"


class CountingDirectory:
    """daum.test is ours. Asked about an address, it answers like the store did before issue 12 item 3:
    "not_local" for a local part it cannot take."""

    def __init__(self, fail=False):
        self.calls, self.fail, self.asked = 0, fail, []

    async def resolve(self, address):
        self.calls += 1
        if self.fail:
            raise ServiceUnavailable("down")
        local, _, domain = address.rpartition("@")
        if domain != "daum.test" or " " in local:
            return Resolution(address, "not_local")
        return Resolution(address, "unknown_user")

    async def is_local_domain(self, domain):
        self.calls += 1
        self.asked.append(domain)
        if self.fail:
            raise ServiceUnavailable("down")
        return domain == "daum.test"


async def test_domain_routes_ask_once_per_domain():
    import asyncio

    d = CountingDirectory()
    routes = DomainRoutes(d, ttl=60)
    got = await asyncio.gather(*(routes.is_local(a) for a in ["x@daum.test", "y@daum.test", "z@naver.test", "w@NAVER.test"]))
    assert got == [True, True, False, False] and d.calls == 2
    assert await routes.is_local("q@daum.test") and d.calls == 2


async def test_domain_verdict_comes_from_the_domain_not_from_the_first_address():
    """Issue 12 item 3: the first address seen in daum.test has a quoted local part with a space.
    The cached verdict must still be "ours", or the next local mail goes to daum's public MX."""
    d = CountingDirectory()
    routes = DomainRoutes(d, ttl=60)
    assert await routes.is_local('"john doe"@daum.test')
    assert await routes.is_local("a@daum.test") and await routes.is_local("b@Daum.Test.")
    assert d.asked == ["daum.test"]


async def test_domain_routes_do_not_remember_failures():
    d = CountingDirectory(fail=True)
    routes = DomainRoutes(d)
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            await routes.is_local("x@daum.test")
    assert d.calls == 2


async def test_domain_routes_remember_not_ours_briefly_and_are_bounded():
    now = [0.0]
    d = CountingDirectory()
    routes = DomainRoutes(d, ttl=30, remote_ttl=5, size=2, clock=lambda: now[0])
    assert await routes.is_local("a@daum.test") and not await routes.is_local("a@naver.test")
    now[0] = 6  # "not ours" is out of date, "ours" is not
    assert await routes.is_local("b@daum.test") and not await routes.is_local("b@naver.test")
    assert d.asked == ["daum.test", "naver.test", "naver.test"]
    await routes.is_local("a@kakao.test")  # a third domain: the least recently used (daum) goes
    assert await routes.is_local("c@daum.test") and d.asked[-1] == "daum.test" and len(routes.items) == 2


@pytest.mark.parametrize(
    "message, relaxed",
    [
        (b"From: a@b.test\r\nTLS-Required: No\r\n\r\nbody\r\n", True),
        (b"tls-required:no\r\nSubject: x\r\n\r\n", True),
        (b"TLS-Required:\r\n  NO\r\n\r\n", True),  # folded
        (b"TLS-Required: Yes\r\n\r\n", False),
        (b"Subject: x\r\n\r\nTLS-Required: No\r\n", False),  # in the body, not the header
        (b"X-TLS-Required: No\r\n\r\n", False),
        (b"", False),
        (b"\r\nTLS-Required: No\r\n", False),  # no header at all: the empty first line starts the body
        (b"Subject: x\nTLS-Required: No\n\nbody\n", True),  # bare LF line ends, as DKIM and the store read them
        (b"TLS-Required: N\r\n o\r\n\r\n", False),  # unfolding joins "N" and " o": not "No"
        (b"TLS-Required: No thanks\r\n\r\n", False),
        (b"TLS-Required: No\r\nTLS-Required: Yes\r\n\r\n", True),  # the first one counts
        (b"Subject: x\r\n\r\n" + b"TLS-Required: No\r\n" * 10, False),
        (b"X-Filler: " + b"x" * 70_000 + b"\r\nTLS-Required: No\r\n\r\n", True),  # long headers are headers too
        (b"X-Filler: " + b"x" * (1 << 20) + b"\r\nTLS-Required: No\r\n\r\n", False),  # past the header bound: not looked at
    ],
    ids=lambda v: v[:40] if isinstance(v, bytes) else str(v),
)
def test_tls_required_no_is_read_from_the_header_only(message, relaxed):
    from mailflow_delivery.routing import tls_not_required

    assert tls_not_required(message) is relaxed
