"""DKIM and ARC verification asking a real DNS server (tests/support/dns.py) over UDP/TCP on loopback:
dkimpy's RSA and Ed25519 signatures pass with the keys as a zone publishes them (the RSA record split
into 255-octet strings, joined by the lookup); SERVFAIL and silence are temperror, a missing key a
permerror; an ARC chain dkimpy starts and we seal passes."""

from __future__ import annotations

import time

import dkim as dkimpy
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import pytest

from mailflow.authn import Arc
from mailflow.authn.arc import seal, verify_chain
from mailflow.authn.dkim import Keys, verify
from mailflow.contracts.messages import DnsAnswer
from tests.support.dkim import ed25519_key, rsa_key
from tests.support.dns import DnsServer

NOW = int(time.time())
MESSAGE = (
    b"Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=alice@a.test\r\n"
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hello\r\n\r\nHello\r\n"
)


class DirectLookup:
    """DnsLookup straight to one DNS server with dnspython (the resolver service's dns.query does the
    same with a cache in front): TXT strings joined, as RFC 6376 §3.6.2.2 reads them."""

    def __init__(self, address: str, lifetime: float = 2.0):
        host, port = address.rsplit(":", 1)
        self.r = dns.asyncresolver.Resolver(configure=False)
        self.r.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
        self.r.lifetime = lifetime

    async def query(self, name: str, rdtype) -> DnsAnswer:
        try:
            answer = await self.r.resolve(name, rdtype)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(name=name, type=rdtype, status="nxdomain")
        except dns.resolver.NoAnswer:
            return DnsAnswer(name=name, type=rdtype, status="nodata")
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            return DnsAnswer(name=name, type=rdtype, status="temp_fail", error=type(exc).__name__)
        return DnsAnswer(
            name=name,
            type=rdtype,
            status="ok",
            records=[b"".join(rr.strings).decode("utf-8", "replace") for rr in answer],
        )


def txt(name: str, value: str) -> str:
    """A zone-file TXT line, the value cut into 255-octet character-strings."""
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{name}. 300 IN TXT {strings}\n"


@pytest.fixture(scope="module")
def world():
    r, e, fwd = rsa_key(), ed25519_key(), rsa_key()
    zone = (
        txt("r._domainkey.a.test", r.txt)
        + txt("e._domainkey.a.test", e.txt)
        + txt("k1-rsa._domainkey.fwd.test", fwd.txt)
    )
    with DnsServer(zone) as server:
        server.servfail.add("broken._domainkey.a.test")
        server.drop.add("silent._domainkey.a.test")
        yield (
            server,
            DirectLookup(server.address),
            {"r": r, "e": e},
            Keys("fwd.test", "k1", fwd.private, e.private),
        )


async def test_dkimpys_signatures_pass_with_the_published_keys(world):
    server, lookup, keys, _ = world
    signed = (
        dkimpy.sign(MESSAGE, b"r", b"a.test", keys["r"].dkimpy, canonicalize=(b"relaxed", b"relaxed"))
        + MESSAGE
    )
    signed = (
        dkimpy.sign(signed, b"e", b"a.test", keys["e"].dkimpy, signature_algorithm=b"ed25519-sha256") + signed
    )
    got = await verify(signed, lookup, NOW)
    assert [(r.result, r.selector) for r in got] == [("pass", "e"), ("pass", "r")]
    assert ("r._domainkey.a.test", "TXT") in server.queries
    assert len(keys["r"].txt) > 255  # the record came in several strings


@pytest.mark.parametrize(
    "selector, result, reason",
    [
        (b"broken", "temperror", "key broken._domainkey.a.test: DNS lookup failed, try later"),  # SERVFAIL
        (b"silent", "temperror", "key silent._domainkey.a.test: DNS lookup failed, try later"),  # no answer
        (b"gone", "permerror", "no key at gone._domainkey.a.test"),  # NXDOMAIN
    ],
)
async def test_what_dns_answers_decides(world, selector, result, reason):
    _, lookup, keys, _ = world
    signed = dkimpy.sign(MESSAGE, selector, b"a.test", keys["r"].dkimpy) + MESSAGE
    assert [(r.result, r.reason) for r in await verify(signed, lookup, NOW)] == [(result, reason)]


async def test_an_arc_chain_through_dns(world):
    _, lookup, keys, ours = world
    first = (
        b"".join(dkimpy.arc_sign(MESSAGE, b"r", b"a.test", keys["r"].dkimpy, b"mx.a.test", timestamp=NOW))
        + MESSAGE
    )
    chain = await verify_chain(first, lookup, NOW)
    assert chain == Arc("pass", 1)
    sealed = await seal(first, "arc=pass", ours, "mx.fwd.test", NOW, chain)
    assert await verify_chain(sealed, lookup, NOW) == Arc("pass", 2)
