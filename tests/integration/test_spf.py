"""SPF through the real resolver service: `check_host` asks `DnsClient`, which asks the resolver over a
real nats-server, which asks a DNS server the test starts on loopback (UDP, and TCP for long answers)."""

from __future__ import annotations

import pytest

from mailflow.authn.spf import check, check_host
from tests.support.dns import DnsServer
from tests.support.resolver import resolver_service

NOW = 1_700_000_000.0
NOISE = " ".join(f'"{c * 255}"' for c in "abcdefghijklmnopqrstuvwxyz" * 2)  # 13,260 octets of TXT
FLOOD = " ".join(f'"{c * 255}"' for c in "abcdefghijklmnopqrstuvwxyz" * 4)  # 26,520: over the limit below

ZONE = f"""
sender.test.        300 IN TXT "v=spf1 include:_spf.sender.test redirect=_rest.sender.test"
_spf.sender.test.   300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_rest.sender.test.  300 IN TXT "v=spf1 a:mail.sender.test -all"
mail.sender.test.   300 IN A   127.0.0.5
loop-a.test.        300 IN TXT "v=spf1 include:loop-b.test -all"
loop-b.test.        300 IN TXT "v=spf1 include:loop-a.test -all"
eleven.test.        300 IN TXT "v=spf1 {" ".join(f"a:h{i}.eleven.test" for i in range(11))} ip4:127.0.0.5 -all"
big.test.           300 IN TXT {NOISE}
big.test.           300 IN TXT "v=spf1 ip4:127.0.0.5 -all"
flood.test.         300 IN TXT {FLOOD}
flood.test.         300 IN TXT "v=spf1 ip4:127.0.0.5 -all"
silent.test.        300 IN TXT "v=spf1 a:dropped.silent.test -all"
""" + "".join(f"h{i}.eleven.test. 300 IN A 192.0.2.{i}\n" for i in range(11))


@pytest.fixture
async def dns_and_client(nats_url):
    """(the DNS server, a DnsClient to a resolver service that asks it)."""
    with DnsServer(ZONE) as server:
        server.drop.add("dropped.silent.test")
        async with resolver_service(nats_url, server, probe=("mail.sender.test", "A"), max_answer_chars=20_000) as client:
            yield server, client


async def spf(client, domain: str, ip: str = "127.0.0.5"):
    return await check_host(client, ip, domain, f"alice@{domain}", "mail.sender.test", "mx.ours.test", now=NOW)


async def test_a_record_that_passes_through_include_and_redirect(dns_and_client):
    dns, client = dns_and_client
    result = await spf(client, "sender.test")
    assert (result.result, result.identity, result.domain) == ("pass", "mailfrom", "sender.test")
    assert result.reason == "sender.test: 127.0.0.5 matched a:mail.sender.test in _rest.sender.test"
    assert (await spf(client, "sender.test", "127.0.0.6")).result == "fail"


async def test_the_second_check_asks_dns_nothing(dns_and_client):
    dns, client = dns_and_client
    helo, mail_from = await check(client, "127.0.0.5", "alice@sender.test", "mail.sender.test", now=NOW)
    assert helo.result == "none" and mail_from.result == "pass"
    asked = list(dns.queries)
    assert ("sender.test", "TXT") in asked and ("mail.sender.test", "TXT") in asked
    again = await check(client, "127.0.0.5", "alice@sender.test", "mail.sender.test", now=NOW)
    assert again == (helo, mail_from)
    assert dns.queries == asked  # everything, the negative answers too, came from the resolver's cache


async def test_an_include_loop_is_a_permerror_that_says_so(dns_and_client):
    result = await spf(dns_and_client[1], "loop-a.test")
    assert result.result == "permerror"
    assert result.reason.endswith("an include/redirect loop: loop-a.test -> loop-b.test -> loop-a.test")


async def test_eleven_lookups_are_a_permerror(dns_and_client):
    dns, client = dns_and_client
    result = await spf(client, "eleven.test")
    assert (result.result, result.reason) == ("permerror", "more than 10 DNS-querying terms, at a:h10.eleven.test in eleven.test")
    assert ("h10.eleven.test", "A") not in dns.queries


async def test_a_huge_txt_answer_comes_over_tcp_and_one_over_the_limit_is_temperror(dns_and_client):
    dns, client = dns_and_client
    assert (await spf(client, "big.test")).result == "pass"
    assert ("big.test", "TXT") in dns.tcp  # truncated over UDP, asked again over TCP
    flood = await spf(client, "flood.test")
    assert flood.result == "temperror" and "answer too large" in flood.reason


async def test_a_dropped_query_is_temperror(dns_and_client):
    dns, client = dns_and_client
    result = await spf(client, "silent.test")
    assert result.result == "temperror" and "a:dropped.silent.test: DNS:" in result.reason
    assert ("dropped.silent.test", "A") in dns.queries
