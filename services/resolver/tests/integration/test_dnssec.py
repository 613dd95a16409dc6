"""The AD bit passed on (MAILFLOW_RESOLVER_DNSSEC_TRUST_AD), against a real DNS server the test starts on
loopback that plays a validating resolver: answers about its `signed` zones carry AD when asked. Each
answer's `secure` flag, TLSA records as text, and the flag kept by the caches."""

from __future__ import annotations

import pytest

from mailflow_resolver.lookup import MxResolver, QueryResolver, make_dns_resolver
from tests.support import Clock
from tests.support.dns import DnsServer

SPKI = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"
ZONE = f"""
signed.test.               300 IN MX 10 mx.signed.test.
signed.test.               300 IN MX 20 mx.plain.test.
mx.signed.test.            300 IN A 127.0.0.3
mx.signed.test.            300 IN AAAA ::1
_25._tcp.mx.signed.test.   300 IN TLSA 3 1 1 {SPKI}
_25._tcp.mx.signed.test.   300 IN TLSA 2 0 2 {"ab" * 64}
mx.plain.test.             300 IN A 127.0.0.4
implicit.signed.test.      300 IN A 127.0.0.5
plain.test.                300 IN MX 10 mx.signed.test.
"""


@pytest.fixture
def dns():
    with DnsServer(ZONE, negative_ttl=30) as server:
        server.signed = {"signed.test"}
        yield server


def mx(dns, trust: bool = True, **kw) -> MxResolver:
    return MxResolver(make_dns_resolver(dns.address, timeout=0.3, lifetime=0.8, dnssec=trust), clock=Clock(), **kw)


def queries(dns, trust: bool = True) -> QueryResolver:
    return QueryResolver(make_dns_resolver(dns.address, timeout=0.3, lifetime=0.8, dnssec=trust), clock=Clock())


async def test_a_secure_mx_answer_marks_the_reply_and_each_host_whose_addresses_are_secure(dns):
    reply = await mx(dns).lookup("signed.test")
    assert reply.status == "ok" and reply.secure
    assert [(h.host, h.secure) for h in reply.hosts] == [("mx.signed.test", True), ("mx.plain.test", False)]
    again = await mx(dns).lookup("signed.test")  # a fresh resolver: same again
    assert again.secure


async def test_an_insecure_mx_answer_makes_no_host_secure(dns):
    reply = await mx(dns).lookup("plain.test")  # its MX names a host in a signed zone: the MX itself is not
    assert reply.status == "ok" and not reply.secure
    assert [(h.host, h.secure) for h in reply.hosts] == [("mx.signed.test", False)]


async def test_implicit_mx_is_secure_when_the_no_mx_answer_and_the_addresses_are(dns):
    reply = await mx(dns).lookup("implicit.signed.test")
    assert reply.implicit and reply.secure and reply.hosts[0].secure


async def test_without_the_setting_nothing_is_secure_and_the_bits_are_not_asked_for(dns):
    dns.ad_unasked = True  # an upstream that sets AD on everything: not believed unless told to
    reply = await mx(dns, trust=False).lookup("signed.test")
    assert reply.status == "ok" and not reply.secure and not any(h.secure for h in reply.hosts)
    answer = await queries(dns, trust=False).query("_25._tcp.mx.signed.test", "TLSA")
    assert answer.status == "ok" and not answer.secure


async def test_the_ad_bit_is_asked_for_only_with_the_setting(dns):
    """The server plays a resolver that sets AD only when asked: off, nothing asks."""
    assert not (await queries(dns, trust=False).query("signed.test", "MX")).secure
    assert (await queries(dns, trust=True).query("signed.test", "MX")).secure


@pytest.mark.parametrize(
    "name, rdtype, status, secure",
    [
        ("_25._tcp.mx.signed.test", "TLSA", "ok", True),
        ("_465._tcp.mx.signed.test", "TLSA", "nxdomain", True),  # a secure denial
        ("mx.signed.test", "TLSA", "nodata", True),
        ("mx.plain.test", "A", "ok", False),
        ("_25._tcp.mx.plain.test", "TLSA", "nxdomain", False),
    ],
)
async def test_each_answer_says_whether_it_was_authenticated(dns, name, rdtype, status, secure):
    answer = await queries(dns).query(name, rdtype)
    assert (answer.status, answer.secure) == (status, secure)


async def test_tlsa_records_as_text(dns):
    answer = await queries(dns).query("_25._tcp.MX.signed.test.", "TLSA")
    assert sorted(answer.records) == sorted([f"3 1 1 {SPKI}", f"2 0 2 {'ab' * 64}"])


async def test_the_caches_keep_the_flag(dns):
    q, m = queries(dns), mx(dns)
    first, first_mx = await q.query("_25._tcp.mx.signed.test", "TLSA"), await m.lookup("signed.test")
    asked = len(dns.queries)
    dns.signed.clear()  # the upstream would now say insecure: the cached answers still say what they were
    cached, cached_mx = await q.query("_25._tcp.mx.signed.test", "TLSA"), await m.lookup("signed.test")
    assert len(dns.queries) == asked and cached.cached and cached_mx.cached
    assert first.secure and cached.secure and first_mx.secure and cached_mx.secure
    assert {h.host: h.secure for h in cached_mx.hosts} == {"mx.signed.test": True, "mx.plain.test": False}
    negative = await q.query("_465._tcp.mx.plain.test", "TLSA")
    assert negative.status == "nxdomain" and not (await q.query("_465._tcp.mx.plain.test", "TLSA")).secure
