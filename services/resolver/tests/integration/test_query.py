"""Single questions (`dns.query`) against a real DNS server the test starts on loopback: each type's
records as text, negative answers cached for the SOA's TTL, failures never cached, the bounds."""

from __future__ import annotations

import asyncio

import pytest
from dnslib import QTYPE, RR, TXT

from mailflow_resolver.lookup import QueryResolver, make_dns_resolver
from tests.support import Clock
from tests.support.dns import DnsServer

LONG = " ".join(f'"{c * 255}"' for c in "abcdefghijklmnopqrstuvwxyz" * 2)  # 52 strings: 13,260 octets

ZONE = f"""
naver.test.       300 IN TXT "v=spf1 " "mx -all"
naver.test.       300 IN TXT "google-site-verification=x"
naver.test.       300 IN MX 10 MX1.Naver.test.
naver.test.       300 IN A 127.0.0.3
naver.test.       300 IN AAAA 2001:db8::0:1
3.0.0.127.in-addr.arpa. 300 IN PTR MX1.naver.test.
nullmx.test.      300 IN MX 0 .
big.test.         300 IN TXT {LONG}
big.test.         300 IN TXT "v=spf1 -all"
""" + "".join(f"many.test. 300 IN A 127.0.1.{i}\n" for i in range(1, 21))


@pytest.fixture
def dns():
    with DnsServer(ZONE, negative_ttl=30) as server:
        server.records.append(RR("utf8.test", QTYPE.TXT, rdata=TXT([b"caf\xc3\xa9 \xff"]), ttl=300))
        yield server


def resolver(dns, **kw) -> QueryResolver:
    kw.setdefault("clock", Clock())
    return QueryResolver(make_dns_resolver(dns.address, timeout=0.3, lifetime=0.8), **kw)


@pytest.mark.parametrize(
    "name,rdtype,records",
    [
        ("naver.test", "TXT", ["v=spf1 mx -all", "google-site-verification=x"]),  # strings joined, RFC 7208 §3.3
        ("NAVER.test.", "MX", ["10 mx1.naver.test"]),
        ("naver.test", "A", ["127.0.0.3"]),
        ("naver.test", "AAAA", ["2001:db8::1"]),
        ("3.0.0.127.in-addr.arpa", "PTR", ["mx1.naver.test"]),
        ("nullmx.test", "MX", ["0 ."]),
        ("utf8.test", "TXT", ["café \ufffd"]),  # an undecodable octet replaced
    ],
)
async def test_records_as_text(dns, name, rdtype, records):
    answer = await resolver(dns).query(name, rdtype)
    assert answer.status == "ok" and sorted(answer.records) == sorted(records)
    assert answer.ttl == 300 and not answer.cached


async def test_nxdomain_and_nodata_are_cached_for_the_soas_negative_ttl(dns):
    clock = Clock()
    r = resolver(dns, clock=clock)
    missing, empty = await r.query("missing.test", "TXT"), await r.query("nullmx.test", "TXT")
    assert (missing.status, missing.ttl) == ("nxdomain", 30) and (empty.status, empty.ttl) == ("nodata", 30)
    asked = len(dns.queries)
    assert (await r.query("missing.test", "TXT")).cached and (await r.query("nullmx.test", "TXT")).cached
    assert len(dns.queries) == asked
    clock.now += 31
    await r.query("missing.test", "TXT")
    assert len(dns.queries) == asked + 1


async def test_negative_ttl_is_capped_by_the_setting(dns):
    assert (await resolver(dns, negative_ttl=5).query("missing.test", "A")).ttl == 5


async def test_positive_answers_are_cached_for_their_ttl_capped(dns):
    clock = Clock()
    r = resolver(dns, clock=clock, max_ttl=100)
    assert (await r.query("naver.test", "TXT")).ttl == 100
    clock.now += 99
    again = await r.query("naver.test", "TXT")
    assert again.cached and again.ttl == 1 and again.records == (await r.query("naver.test", "TXT")).records
    clock.now += 2
    assert not (await r.query("naver.test", "TXT")).cached


async def test_the_cache_is_keyed_by_name_and_type(dns):
    r = resolver(dns)
    await r.query("naver.test", "A")
    assert (await r.query("naver.test", "AAAA")).records == ["2001:db8::1"]
    assert dns.queries == [("naver.test", "A"), ("naver.test", "AAAA")]


async def test_servfail_and_timeout_are_temp_fail_and_never_cached(dns):
    dns.servfail.add("broken.test")
    dns.drop.add("silent.test")
    r = resolver(dns)
    broken, silent = await r.query("broken.test", "TXT"), await r.query("silent.test", "TXT")
    assert broken.status == silent.status == "temp_fail"
    assert "TXT silent.test" in silent.error
    asked = len(dns.queries)
    await r.query("broken.test", "TXT")
    assert len(dns.queries) > asked


async def test_a_huge_txt_answer_comes_over_tcp(dns):
    answer = await resolver(dns).query("big.test", "TXT")
    assert answer.status == "ok" and sorted(len(t) for t in answer.records) == [11, 13_260]
    assert dns.tcp == [("big.test", "TXT")]  # the UDP answer came truncated


@pytest.mark.parametrize(
    "limits,name,rdtype,error",
    [
        ({"max_answer_chars": 10_000}, "big.test", "TXT", "answer too large (13271 characters;"),
        ({"max_answer_records": 10}, "many.test", "A", "answer too large (20 records;"),
    ],
)
async def test_answers_over_the_limits_are_temp_fail_and_not_cached(dns, limits, name, rdtype, error):
    r = resolver(dns, **limits)
    answer = await r.query(name, rdtype)
    assert answer.status == "temp_fail" and answer.records == [] and error in answer.error
    assert not (await r.query(name, rdtype)).cached


@pytest.mark.parametrize("name", ["", ".", "a..b.test", "x" * 64 + ".test", "a." * 127 + "test", "tab\t.test"])
async def test_a_name_that_cannot_be_in_dns_is_nxdomain_without_asking(dns, name):
    answer = await resolver(dns).query(name, "TXT")
    assert answer.status == "nxdomain" and answer.error.startswith("not a domain name")
    assert dns.queries == []


async def test_concurrent_questions_share_one_query(dns):
    r = resolver(dns)
    answers = await asyncio.gather(*(r.query("naver.test", "MX") for _ in range(20)))
    assert {a.records[0] for a in answers} == {"10 mx1.naver.test"}
    assert dns.queries == [("naver.test", "MX")]
