"""Remote mail through an outbound relay (smarthost) and the transport map, with real parts: the relay
is Mailflow's own smtp-ingress on 127.0.0.5 (submission: STARTTLS, then AUTH against its own
mailbox-store; SMTPS), the other MTA aiosmtpd on 127.0.0.1, the resolver's real lookup code asking a
DNS server the test starts, and delivery configured through its Settings as in production."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow_delivery.app import remote_config
from mailflow_delivery.dkim import Signer
from mailflow_delivery.routing import Deliveries
from mailflow_delivery.settings import Settings
from mailflow_resolver.app import build_resolvers
from mailflow_resolver.settings import Settings as ResolverSettings
from services.delivery.tests.support import Relay, RemoteMta, Scripted, dkim_verdicts
from tests.support import free_port
from tests.support.dns import DnsServer
from tests.support.doubles import MemoryBodies, MemorySentLog
from tests.support.store import LocalStore

ZONE = """
direct.test.     300 IN MX 10 mx.direct.test.
mx.direct.test.  300 IN A  127.0.0.1
naver.test.      300 IN MX 10 mx.naver.test.
mx.naver.test.   300 IN A  127.0.0.1
"""
PASSWORD = "relay-pw-7f3a"  # the login a@daum.test has at the provider


@pytest.fixture(scope="module")
def provider_store():
    """The relay's own mailbox-store: the provider knows a@daum.test (the login) and hosts relay.test."""
    with LocalStore.running() as s:
        yield s


@pytest.fixture
async def world(tmp_path, store, provider_store):
    """(make, relay, mta, dns, dkim records): make(**delivery settings) -> Deliveries whose relay is
    the provider's smtp-ingress unless the settings say otherwise."""
    published = store.add_dkim("daum.test", "k1")
    records = {f"{r.selector}._domainkey.daum.test.".encode(): r.txt().encode() for r in published.records}
    provider = provider_store.fresh(("a@daum.test", PASSWORD))
    provider.add_domain("relay.test")
    with DnsServer(ZONE) as dns, RemoteMta(tmp_path) as mta:
        async with Relay(tmp_path, provider) as relay:
            resolver, _ = build_resolvers(ResolverSettings(service_token="t", nameservers=dns.address, timeout=2, lifetime=4))

            def make(**kw) -> Deliveries:
                values = dict(
                    service_token="t",
                    remote_port=mta.port,
                    relay_host=relay.host,
                    relay_port=relay.port(),
                    relay_tls_ca_file=str(relay.cert),
                    relay_tls_name="smtp.relay.test",
                    relay_user="a@daum.test",
                    relay_password=PASSWORD,
                    helo_name="mx.daum.test",
                    **{f"{t}_timeout": 5 for t in ("connect", "greeting", "command", "data_start", "data_end")},
                )
                values.update(kw)
                return Deliveries(store, store, MemoryBodies(), resolver, MemorySentLog(), remote_config(Settings(**values)), signer=Signer(store))

            yield make, relay, mta, dns, records
        await provider.close()


def jobs(qid: str, *rcpts: str) -> list[DeliveryJob]:
    body = f"From: a@daum.test\r\nTo: {', '.join(rcpts)}\r\nSubject: relayed\r\nDate: Mon, 7 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{qid}@daum.test>\r\n\r\nHello\r\n".encode()
    return [
        DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=1, mail_from="a@daum.test", rcpt=Recipient(address=r), body_ref=f"inline:{qid}:{len(body)}", body=body, size=len(body), received_at=datetime.now(UTC), dkim=True)
        for r in rcpts
    ]


def outcomes(results):
    return [(r.rcpt, r.outcome, r.status, r.remote_mta) for r in results]


@pytest.mark.parametrize("mode, listener", [("starttls", "submission"), ("tls", "smtps")])
async def test_remote_mail_goes_through_the_relay_signed_encrypted_and_logged_in(world, mode, listener, caplog):
    make, relay, mta, dns, records = world
    d = make(relay_tls=mode, relay_port=relay.port(listener))
    with caplog.at_level(logging.INFO, logger="mailflow_delivery.routing"):
        results, traces = await d.run(jobs("R1", "z@naver.test", "y@other.test"))
    assert outcomes(results) == [("z@naver.test", "delivered", "2.0.0", "127.0.0.5"), ("y@other.test", "delivered", "2.0.0", "127.0.0.5")]
    # one transaction for both domains, after TLS and AUTH as the configured user
    ((msg, raw),) = relay.messages
    assert [r.address for r in msg.rcpt_to] == ["z@naver.test", "y@other.test"]
    assert msg.client.listener == listener and msg.client.auth_user == "a@daum.test" and msg.client.tls.startswith("TLSv1.")
    # the relay got signed mail: dkimpy verifies both signatures against the published records
    assert dkim_verdicts(raw, records) == [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
    assert dns.queries == [] and mta.messages == []  # no MX lookup, nothing straight to an MX
    port = relay.port(listener)
    assert {t.detail for t in traces if t.step == "resolver"} == {f"{dom}: via relay [127.0.0.5]:{port} (no MX lookup)" for dom in ("naver.test", "other.test")}
    assert all(f"via relay [127.0.0.5]:{port}: 250 " in t.detail for t in traces if t.step == "delivery")
    lines = [r for r in caplog.records if r.getMessage() == "delivered"]
    assert [(r.route, r.next_hop, r.remote) for r in lines] == [("relay", f"[127.0.0.5]:{port}", "127.0.0.5")] * 2


async def test_the_relays_reply_per_recipient_delivers_defers_and_bounces(world):
    make, relay, _, _, _ = world
    relay.settings.max_recipients = 1  # the provider takes one recipient per transaction
    results, _ = await make().run(jobs("R2", "nobody@relay.test", "z@naver.test", "y@other.test"))
    assert outcomes(results) == [
        ("nobody@relay.test", "bounced", "5.1.1", "127.0.0.5"),  # 550 5.1.1 from the relay
        ("z@naver.test", "delivered", "2.0.0", "127.0.0.5"),
        ("y@other.test", "deferred", "4.5.3", "127.0.0.5"),  # 452 4.5.3 too many recipients: next time
    ]
    assert [r.address for r in relay.messages[0][0].rcpt_to] == ["z@naver.test"]


async def test_a_wrong_relay_password_defers_and_never_shows_it(world, caplog):
    make, relay, _, _, _ = world
    d = make(relay_password="not-the-" + PASSWORD)
    with caplog.at_level(logging.DEBUG, logger="mailflow_delivery"):
        (r,), _ = await d.run(jobs("R3", "z@naver.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.8")  # the relay said 535 5.7.8: the operator's to fix
    assert "AUTH as a@daum.test refused: 535 5.7.8" in r.diagnostic and r.remote_mta == "127.0.0.5"
    assert relay.messages == []
    assert any(rec.levelno == logging.WARNING and "MAILFLOW_DELIVERY_RELAY_" in rec.getMessage() for rec in caplog.records)
    assert ">> AUTH PLAIN ****" in caplog.text and PASSWORD not in caplog.text


async def test_a_relay_that_cannot_check_our_login_defers(world):
    make, relay, _, _, _ = world
    relay.directory.down = True  # the provider's own store does not answer: 454 4.7.0 to AUTH
    (r,), _ = await make().run(jobs("R8", "z@naver.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.0") and "refused: 454 4.7.0" in r.diagnostic
    assert relay.messages == []


async def test_a_relay_that_does_not_offer_starttls_gets_nothing_in_clear(world):
    """STARTTLS stripped on the way (or never offered): not even the login leaves, let alone mail."""
    make, _, _, _, _ = world
    stripped = await Scripted(replies={}, ehlo=("250-relay", "250-AUTH PLAIN LOGIN", "250 PIPELINING")).start("127.0.0.5")
    try:
        (r,), _ = await make(relay_port=stripped.port).run(jobs("R4", "z@naver.test"))
    finally:
        await stripped.stop()
    assert (r.outcome, r.status) == ("deferred", "4.7.4") and "STARTTLS required" in r.diagnostic
    assert stripped.lines == [b"EHLO mx.daum.test"]


@pytest.mark.parametrize(
    "settings, status, why",
    [
        (lambda relay: {"relay_tls_name": "other.relay.test"}, "4.7.5", "certificate verify failed"),  # not the name it was given
        (lambda relay: {"relay_tls_ca_file": ""}, "4.7.5", "certificate verify failed"),  # signed by no CA the system knows
        (lambda relay: {"relay_tls": "tls", "relay_port": relay.port("smtps"), "relay_tls_name": "other.relay.test"}, "4.7.5", "certificate verify failed"),
        (lambda relay: {"relay_port": free_port(relay.host)}, "4.4.1", "connect to 127.0.0.5"),
    ],
    ids=["wrong-name", "unknown-ca", "implicit-tls-wrong-name", "nothing-listening"],
)
async def test_a_relay_that_cannot_be_trusted_or_reached_defers(world, settings, status, why):
    make, relay, _, _, _ = world
    (r,), _ = await make(**settings(relay)).run(jobs("R5", "z@naver.test"))
    assert (r.outcome, r.status) == ("deferred", status) and why in r.diagnostic
    assert r.diagnostic.startswith(f"451 {status} relay [127.0.0.5]:")
    assert relay.messages == []


async def test_a_map_host_is_looked_up_as_an_mx_and_a_missing_one_defers(world):
    """`domain=host:port` takes host's MX (here naver.test's); a host that does not exist is the
    operator's mistake: deferred 4.4.3, where the recipient domain's own NXDOMAIN would bounce."""
    make, _, mta, _, _ = world
    d = make(routes=f"viamx.test=naver.test:{mta.port} gone.test=nohost.test")
    results, _ = await d.run(jobs("R7", "v@viamx.test", "g@gone.test"))
    assert outcomes(results) == [("v@viamx.test", "delivered", "2.0.0", "mx.naver.test"), ("g@gone.test", "deferred", "4.4.3", None)]
    assert "MX lookup for nohost.test (map nohost.test) failed" in results[1].diagnostic
    assert [m.rcpts for m in mta.messages] == [["v@viamx.test"]]


async def test_the_transport_map_sends_one_domain_to_a_host_and_another_to_its_mx(world):
    make, relay, mta, dns, _ = world
    d = make(routes=f"partner.test=[127.0.0.1]:{mta.port}, direct.test=mx")
    results, traces = await d.run(jobs("R6", "z@naver.test", "p@partner.test", "x@direct.test"))
    assert outcomes(results) == [
        ("z@naver.test", "delivered", "2.0.0", "127.0.0.5"),  # the relay
        ("p@partner.test", "delivered", "2.0.0", "127.0.0.1"),  # the map's host, no MX lookup
        ("x@direct.test", "delivered", "2.0.0", "mx.direct.test"),  # `mx`: its own MX despite the relay
    ]
    assert [r.address for r in relay.messages[0][0].rcpt_to] == ["z@naver.test"]
    assert sorted(m.rcpts[0] for m in mta.messages) == ["p@partner.test", "x@direct.test"]
    assert ("direct.test", "MX") in dns.queries and {name for name, _ in dns.queries} == {"direct.test", "mx.direct.test"}
    assert {t.detail for t in traces if t.step == "resolver"} == {
        f"naver.test: via relay [127.0.0.5]:{relay.port()} (no MX lookup)",
        f"partner.test: via map [127.0.0.1]:{mta.port} (no MX lookup)",
        "direct.test: ok 10 mx.direct.test",
    }


# --- REQUIRETLS (RFC 8689 §4.2.1): authenticated TLS to a host that offers REQUIRETLS, or a bounce -----


def marked(qid: str, *rcpts: str) -> list[DeliveryJob]:
    return [j.model_copy(update={"requiretls": True}) for j in jobs(qid, *rcpts)]


@pytest.mark.parametrize("mode, listener", [("starttls", "submission"), ("tls", "smtps")])
async def test_requiretls_through_a_verified_relay_that_offers_it(world, mode, listener):
    make, relay, _, _, _ = world
    (r,), _ = await make(relay_tls=mode, relay_port=relay.port(listener)).run(marked("Q1", "z@naver.test"))
    assert (r.outcome, r.status) == ("delivered", "2.0.0")
    ((msg, _),) = relay.messages
    assert msg.requiretls is True  # passed on: MAIL FROM:<...> REQUIRETLS


async def test_requiretls_never_takes_a_relay_whose_certificate_is_not_checked(world):
    make, relay, _, _, _ = world
    (r,), _ = await make(relay_tls_verify=False).run(marked("Q2", "z@naver.test"))
    assert (r.outcome, r.status) == ("bounced", "5.7.10") and "not set to TLS with a verified certificate" in r.diagnostic
    assert relay.messages == []


async def test_requiretls_to_a_host_that_does_not_offer_it_bounces_5_7_30(world, tmp_path):
    """aiosmtpd does STARTTLS with a certificate we trust, for the name we asked, but has no REQUIRETLS."""
    make, _, mta, _, _ = world
    d = make(routes=f"partner.test=[127.0.0.1]:{mta.port}", tls_ca_file=str(tmp_path / "remote-cert.pem"))
    (r,), _ = await d.run(marked("Q3", "p@partner.test"))
    assert (r.outcome, r.status) == ("bounced", "5.7.30") and "REQUIRETLS not offered" in r.diagnostic
    assert mta.messages == []
    (plain,), _ = await d.run(jobs("Q4", "p@partner.test"))  # the same host takes unmarked mail
    assert plain.outcome == "delivered"


async def test_requiretls_to_a_host_whose_certificate_does_not_verify_bounces(world):
    make, _, mta, _, _ = world
    (r,), _ = await make(routes=f"partner.test=[127.0.0.1]:{mta.port}").run(marked("Q5", "p@partner.test"))
    assert (r.outcome, r.status) == ("bounced", "5.7.10") and "certificate verify failed" in r.diagnostic
    assert mta.messages == []


async def test_requiretls_to_an_mx_that_cannot_be_validated_bounces_before_connecting(world):
    make, _, mta, dns, _ = world
    (r,), _ = await make(routes="direct.test=mx").run(marked("Q6", "x@direct.test"))
    assert (r.outcome, r.status) == ("bounced", "5.7.10") and "cannot be validated" in r.diagnostic
    assert mta.messages == []


# --- TLS-RPT (RFC 8460): what TLS became of the sessions with a recipient domain's MX -------------------


def failures(r):
    return [(f.result_type, f.receiving_mx_hostname, f.receiving_ip) for f in r.tls.failures]


async def test_tls_with_a_domains_mx_is_reported_once_per_transaction(world):
    make, _, mta, _, _ = world
    results, _ = await make(routes="direct.test=mx").run(jobs("T1", "x@direct.test", "y@direct.test"))
    assert [r.outcome for r in results] == ["delivered", "delivered"]
    r = results[0]
    assert (r.tls.policy_domain, r.tls.policy_type, r.tls.success, r.tls.failures) == ("direct.test", "no-policy-found", True, [])
    assert results[1].tls is None  # one transaction, counted once
    (r,), _ = await make().run(jobs("T2", "z@naver.test"))  # through the relay: not the domain's MX, not reported
    assert r.outcome == "delivered" and r.tls is None


async def test_an_mx_without_starttls_is_reported_as_such(world):
    make, _, _, _, _ = world
    plain = await Scripted(replies={"DATA": "354 go"}).start()
    try:
        (r,), _ = await make(routes="direct.test=mx", remote_port=plain.port).run(jobs("T3", "x@direct.test"))
    finally:
        await plain.stop()
    assert r.outcome == "delivered"  # opportunistic TLS: in clear, as before, but the report says so
    assert not r.tls.success and failures(r) == [("starttls-not-supported", "mx.direct.test", "127.0.0.1")]
