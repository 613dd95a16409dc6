"""MX lookups against a real DNS server the test starts on loopback (no internet DNS)."""

from __future__ import annotations

import pytest

from mailflow_resolver.lookup import MxResolver, make_dns_resolver
from tests.support import Clock
from tests.support.dns import DnsServer

ZONE = """
naver.test.       300 IN MX 10 mx1.naver.test.
naver.test.       300 IN MX 10 mx2.naver.test.
naver.test.       300 IN MX 20 backup.naver.test.
mx1.naver.test.   300 IN A 127.0.0.3
mx2.naver.test.   300 IN A 127.0.0.4
backup.naver.test. 60 IN AAAA ::1
implicit.test.    300 IN A 127.0.0.5
implicit.test.    300 IN AAAA ::1
nullmx.test.      300 IN MX 0 .
nomail.test.      300 IN TXT "v=spf1 -all"
dangling.test.    300 IN MX 10 nowhere.dangling.test.
"""


@pytest.fixture
def dns():
    with DnsServer(ZONE) as server:
        yield server


def resolver(dns, clock=None, **kw):
    return MxResolver(make_dns_resolver(dns.address, timeout=0.3, lifetime=0.8), clock=clock or Clock(), **kw)


async def test_mx_sorted_by_preference_with_addresses(dns):
    reply = await resolver(dns).lookup("NAVER.test.")
    assert reply.status == "ok" and reply.domain == "naver.test" and not reply.implicit
    assert [h.preference for h in reply.hosts] == [10, 10, 20]
    assert {h.host for h in reply.hosts[:2]} == {"mx1.naver.test", "mx2.naver.test"}
    assert reply.hosts[2].host == "backup.naver.test" and reply.hosts[2].addresses == ["::1"]
    assert {a for h in reply.hosts[:2] for a in h.addresses} == {"127.0.0.3", "127.0.0.4"}
    assert reply.ttl == 60  # the smallest TTL involved


async def test_equal_preferences_are_shuffled(dns):
    r = resolver(dns)
    firsts = {(await r.lookup("naver.test")).hosts[0].host for _ in range(40)}
    assert firsts == {"mx1.naver.test", "mx2.naver.test"}


async def test_no_mx_falls_back_to_a_and_aaaa(dns):
    reply = await resolver(dns).lookup("implicit.test")
    assert reply.status == "ok" and reply.implicit
    assert reply.hosts[0].host == "implicit.test"
    assert sorted(reply.hosts[0].addresses) == ["127.0.0.5", "::1"]


async def test_ipv4_only_when_ipv6_is_off(dns):
    reply = await resolver(dns, ipv6=False).lookup("implicit.test")
    assert reply.hosts[0].addresses == ["127.0.0.5"]


@pytest.mark.parametrize(
    "domain,status",
    [
        ("nullmx.test", "null_mx"),
        ("missing.test", "nxdomain"),
        ("nomail.test", "no_mail_host"),
        ("dangling.test", "no_mail_host"),
        ("bad..domain", "nxdomain"),
    ],
)
async def test_permanent_failures(dns, domain, status):
    assert (await resolver(dns).lookup(domain)).status == status


async def test_servfail_and_timeout_are_temporary_and_not_cached(dns):
    dns.servfail.add("broken.test")
    dns.drop.add("silent.test")
    r = resolver(dns)
    assert (await r.lookup("broken.test")).status == "temp_fail"
    assert (await r.lookup("silent.test")).status == "temp_fail"
    asked = len(dns.queries)
    assert (await r.lookup("broken.test")).status == "temp_fail"
    assert len(dns.queries) > asked  # asked DNS again: temporary failures are never cached


async def test_cache_honours_ttl_and_negative_answers(dns):
    clock = Clock()
    r = resolver(dns, clock=clock)
    await r.lookup("naver.test")
    await r.lookup("missing.test")
    asked = len(dns.queries)
    cached = await r.lookup("naver.test")
    assert cached.cached and cached.status == "ok"
    assert (await r.lookup("missing.test")).status == "nxdomain"
    assert len(dns.queries) == asked  # both from the cache, the NXDOMAIN too
    clock.now += 61  # past the MX answer's 60 s and the negative TTL
    await r.lookup("naver.test")
    await r.lookup("missing.test")
    assert len(dns.queries) > asked
