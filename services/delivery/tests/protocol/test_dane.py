"""DANE for SMTP (RFC 7672) with real parts: a DNS server the test starts plays a validating resolver
(AD bit on the answers of zone dane.test, none on plain.test), the resolver's own lookup code asks it
with MAILFLOW_RESOLVER_DNSSEC_TRUST_AD on, and the receiving MTAs are aiosmtpd on loopback: one with
STARTTLS and a certificate the test makes (127.0.0.1), one without STARTTLS (127.0.0.2, same port).
Outcomes are asserted on the delivery results, on the TLS report each carries (DeliveryResult.tls: what
TLS-RPT counts, RFC 8460 names) and on mailflow_delivery_dane_total."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow_delivery.app import remote_config
from mailflow_delivery.dane import RESULTS, Dane
from mailflow_delivery.routing import Deliveries
from mailflow_delivery.settings import Settings
from mailflow_resolver.app import build_resolvers
from mailflow_resolver.settings import Settings as ResolverSettings
from services.delivery.tests.support import RemoteMta
from tests.support.dns import DnsServer
from tests.support.doubles import MemoryBodies, MemorySentLog


def spki_sha256(pem_file) -> str:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def zone(port: int, good: str, full: str) -> str:
    """`good`: SHA-256 of the MTA's key (3 1 1), `full`: of its whole certificate (3 0 1)."""
    wrong = hashlib.sha256(b"another key").hexdigest()
    tlsa = f"_{port}._tcp"
    return f"""
pass.dane.test.              300 IN MX 10 mx.pass.dane.test.
mx.pass.dane.test.           300 IN A 127.0.0.1
{tlsa}.mx.pass.dane.test.    300 IN TLSA 3 1 1 {good}
mismatch.dane.test.          300 IN MX 10 mx.mismatch.dane.test.
mx.mismatch.dane.test.       300 IN A 127.0.0.1
{tlsa}.mx.mismatch.dane.test. 300 IN TLSA 3 1 1 {wrong}
{tlsa}.mx.mismatch.dane.test. 300 IN TLSA 3 1 2 {"ab" * 64}
nostarttls.dane.test.        300 IN MX 10 mx.nostarttls.dane.test.
mx.nostarttls.dane.test.     300 IN A 127.0.0.2
{tlsa}.mx.nostarttls.dane.test. 300 IN TLSA 3 1 1 {good}
servfail.dane.test.          300 IN MX 10 mx.servfail.dane.test.
mx.servfail.dane.test.       300 IN A 127.0.0.1
unusable.dane.test.          300 IN MX 10 mx.unusable.dane.test.
mx.unusable.dane.test.       300 IN A 127.0.0.1
{tlsa}.mx.unusable.dane.test. 300 IN TLSA 2 0 1 {good}
{tlsa}.mx.unusable.dane.test. 300 IN TLSA 3 2 1 {good}
malformed.dane.test.         300 IN MX 10 mx.malformed.dane.test.
mx.malformed.dane.test.      300 IN A 127.0.0.1
{tlsa}.mx.malformed.dane.test. 300 IN TLSA 3 1 1 {good[:-2]}
notlsa.dane.test.            300 IN MX 10 mx.notlsa.dane.test.
mx.notlsa.dane.test.         300 IN A 127.0.0.2
fallback.dane.test.          300 IN MX 10 bad.fallback.dane.test.
fallback.dane.test.          300 IN MX 20 good.fallback.dane.test.
bad.fallback.dane.test.      300 IN A 127.0.0.1
{tlsa}.bad.fallback.dane.test. 300 IN TLSA 3 1 1 {wrong}
good.fallback.dane.test.     300 IN A 127.0.0.1
{tlsa}.good.fallback.dane.test. 300 IN TLSA 3 0 1 {full}
insecure.plain.test.         300 IN MX 10 mx.insecure.plain.test.
mx.insecure.plain.test.      300 IN A 127.0.0.2
{tlsa}.mx.insecure.plain.test. 300 IN TLSA 3 1 1 {wrong}
"""


@pytest.fixture
async def world(tmp_path, store):
    """make(trust_ad=True) -> (Deliveries, counted(): what mailflow_delivery_dane_total gained since);
    the MTAs; the DNS server."""
    (tmp_path / "tls").mkdir()
    (tmp_path / "plain").mkdir()
    with RemoteMta(tmp_path / "tls") as mta, RemoteMta(tmp_path / "plain", host="127.0.0.2", starttls=False, port=mta.port) as plain:
        der = x509.load_pem_x509_certificate(mta.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        text = zone(mta.port, spki_sha256(mta.cert), hashlib.sha256(der).hexdigest())
        with DnsServer(text) as dns:
            dns.signed = {"dane.test"}
            dns.servfail.add(f"_{mta.port}._tcp.mx.servfail.dane.test")

            def make(trust_ad: bool = True) -> tuple[Deliveries, Callable[[], dict[str, float]]]:
                mx, queries = build_resolvers(ResolverSettings(service_token="t", nameservers=dns.address, timeout=1, lifetime=2, dnssec_trust_ad=trust_ad))
                settings = Settings(service_token="t", remote_port=mta.port, helo_name="mx.daum.test", **{f"{t}_timeout": 5 for t in ("connect", "greeting", "command", "data_start", "data_end")})
                before = dane_total()
                return Deliveries(store, store, MemoryBodies(), mx, MemorySentLog(), remote_config(settings), dane=Dane(queries)), lambda: {r: n - before[r] for r, n in dane_total().items() if n != before[r]}

            yield make, mta, plain, dns


def dane_total() -> dict[str, float]:
    return {r: REGISTRY.get_sample_value("mailflow_delivery_dane_total", {"result": r}) or 0.0 for r in RESULTS}


def failures(r) -> list[tuple[str, str, str]]:
    """The TLS report's failure details: (result type, MX host, address)."""
    return [(f.result_type, f.receiving_mx_hostname, f.receiving_ip) for f in r.tls.failures]


def job(qid: str, rcpt: str) -> list[DeliveryJob]:
    body = f"From: a@daum.test\r\nTo: {rcpt}\r\nSubject: dane\r\nMessage-ID: <{qid}@daum.test>\r\n\r\nHello\r\n".encode()
    return [DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=1, mail_from="a@daum.test", rcpt=Recipient(address=rcpt), body_ref=f"inline:{qid}", body=body, size=len(body), received_at=datetime.now(UTC))]


async def test_a_certificate_that_matches_the_tlsa_record_delivers(world):
    make, mta, _, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D1", "z@pass.dane.test"))
    assert (r.outcome, r.status, r.remote_mta) == ("delivered", "2.0.0", "mx.pass.dane.test")
    assert "DANE-EE verified" in r.diagnostic and "(via TLSv1." in r.diagnostic
    assert [(m.rcpts, m.tls) for m in mta.messages] == [(["z@pass.dane.test"], True)]
    assert (r.tls.policy_domain, r.tls.success, r.tls.failures) == ("pass.dane.test", True, [])
    assert counted() == {"success": 1}


async def test_a_certificate_that_matches_no_tlsa_record_defers_and_sends_nothing(world):
    make, mta, _, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D2", "z@mismatch.dane.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.5")
    assert r.diagnostic.startswith("451 4.7.5 no MX of mismatch.dane.test took the message: mx.mismatch.dane.test[127.0.0.1]: DANE: the certificate of mx.mismatch.dane.test matches none of its TLSA records (3 1 1 ")
    assert mta.messages == []
    assert not r.tls.success and failures(r) == [("validation-failure", "mx.mismatch.dane.test", "127.0.0.1")]
    assert "matches none of its TLSA records" in r.tls.failures[0].detail and counted() == {"validation-failure": 1}


async def test_no_starttls_offered_defers_never_in_clear(world):
    make, mta, plain, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D3", "z@nostarttls.dane.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.4")
    assert "mx.nostarttls.dane.test[127.0.0.2]: STARTTLS required (DANE) but not offered" in r.diagnostic
    assert plain.messages == [] and mta.messages == []
    assert failures(r) == [("starttls-not-supported", "mx.nostarttls.dane.test", "127.0.0.2")]
    assert counted() == {"starttls-not-supported": 1}


async def test_a_failed_tlsa_lookup_skips_the_host(world):
    make, mta, _, dns = world
    d, counted = make()
    (r,), _ = await d.run(job("D4", "z@servfail.dane.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.5")
    assert f"mx.servfail.dane.test: DANE: TLSA lookup for _{mta.port}._tcp.mx.servfail.dane.test failed" in r.diagnostic
    assert mta.messages == []
    assert not r.tls.success and failures(r) == [("dnssec-invalid", "mx.servfail.dane.test", "")]  # TLS-RPT counts it
    assert "TLSA lookup" in r.tls.failures[0].detail and counted() == {"dnssec-invalid": 1}


async def test_secure_tlsa_records_none_usable_still_require_tls_without_authentication(world):
    make, mta, _, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D5", "z@unusable.dane.test"))
    assert (r.outcome, r.status) == ("delivered", "2.0.0")
    assert "DANE: encrypted, not authenticated (no usable TLSA record)" in r.diagnostic
    assert [m.tls for m in mta.messages] == [True]
    assert r.tls.success and r.tls.failures == []  # over TLS, as RFC 7672 §2.2 asks; the log line says why not authenticated
    assert counted() == {"tlsa-invalid": 1}


async def test_a_tlsa_record_of_the_wrong_length_makes_the_answer_unreadable_and_skips_the_host(world):
    """dnspython refuses a whole message holding a SHA-256 record that is not 32 octets (FormError), so
    the lookup ends as a temp_fail, not as an unusable record: fail closed, never in clear."""
    make, mta, _, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D10", "z@malformed.dane.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.5") and "DANE: TLSA lookup" in r.diagnostic
    assert mta.messages == [] and [f[0] for f in failures(r)] == ["dnssec-invalid"] and counted() == {"dnssec-invalid": 1}


async def test_a_secure_mx_without_tlsa_records_is_opportunistic(world):
    make, _, plain, dns = world
    d, counted = make()
    (r,), _ = await d.run(job("D6", "z@notlsa.dane.test"))
    assert (r.outcome, r.status) == ("delivered", "2.0.0")
    assert [m.tls for m in plain.messages] == [False]  # no STARTTLS there: in clear, as without DANE
    assert counted() == {} and (f"_{plain.port}._tcp.mx.notlsa.dane.test", "TLSA") in dns.queries


async def test_a_host_that_fails_its_tlsa_records_is_left_for_the_next_mx(world):
    make, mta, _, _ = world
    d, counted = make()
    (r,), _ = await d.run(job("D7", "z@fallback.dane.test"))
    assert (r.outcome, r.status, r.remote_mta) == ("delivered", "2.0.0", "good.fallback.dane.test")
    assert r.tls.success and failures(r) == [("validation-failure", "bad.fallback.dane.test", "127.0.0.1")]
    assert counted() == {"validation-failure": 1, "success": 1}
    assert len(mta.messages) == 1


async def test_insecure_dns_is_opportunistic_and_asks_for_no_tlsa(world):
    """No AD bit on the MX answer: its TLSA records (wrong ones here) are not even asked for."""
    make, _, plain, dns = world
    d, counted = make()
    (r,), _ = await d.run(job("D8", "z@insecure.plain.test"))
    assert (r.outcome, r.status) == ("delivered", "2.0.0")
    assert [m.tls for m in plain.messages] == [False] and counted() == {}
    assert not [q for q in dns.queries if q[1] == "TLSA"]


async def test_without_trusting_the_ad_bit_dane_never_applies(world):
    make, mta, _, dns = world
    d, counted = make(trust_ad=False)
    (r,), _ = await d.run(job("D9", "z@mismatch.dane.test"))
    assert (r.outcome, r.status) == ("delivered", "2.0.0")  # opportunistic TLS, the certificate unchecked
    assert "DANE" not in r.diagnostic and [m.tls for m in mta.messages] == [True]
    assert counted() == {} and not [q for q in dns.queries if q[1] == "TLSA"]
