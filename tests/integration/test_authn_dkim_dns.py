"""DKIM and ARC verification through the real resolver service: `verify` asks `DnsClient`, which asks
the resolver over a real nats-server, which asks a DNS server the test starts on loopback. dkimpy's RSA
and Ed25519 signatures pass with the keys as the zone publishes them (the RSA record split into 255-octet
strings, joined on the way); SERVFAIL and silence are temperror, a missing key a permerror; an ARC chain
dkimpy starts and we seal passes."""

from __future__ import annotations

import time

import dkim as dkimpy
import pytest

from mailflow.authn import Arc
from mailflow.authn.arc import seal, verify_chain
from mailflow.authn.dkim import Keys, verify
from tests.support.dkim import ed25519_key, rsa_key
from tests.support.dns import DnsServer
from tests.support.resolver import resolver_service

NOW = int(time.time())
MESSAGE = (
    b"Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=alice@a.test\r\n"
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hello\r\n\r\nHello\r\n"
)


def txt(name: str, value: str) -> str:
    """A zone-file TXT line, the value cut into 255-octet character-strings."""
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{name}. 300 IN TXT {strings}\n"


@pytest.fixture(scope="module")
def keys():
    r, e, fwd = rsa_key(), ed25519_key(), rsa_key()
    return {"r": r, "e": e, "fwd": fwd}


@pytest.fixture
async def world(nats_url, keys):
    """(the DNS server, a DnsClient to a resolver service that asks it, the keys, our sealing keys)."""
    zone = txt("r._domainkey.a.test", keys["r"].txt) + txt("e._domainkey.a.test", keys["e"].txt)
    zone += txt("k1-rsa._domainkey.fwd.test", keys["fwd"].txt)
    with DnsServer(zone) as server:
        server.servfail.add("broken._domainkey.a.test")
        server.drop.add("silent._domainkey.a.test")
        async with resolver_service(nats_url, server, probe=("e._domainkey.a.test", "TXT")) as client:
            yield server, client, keys, Keys("fwd.test", "k1", keys["fwd"].private, keys["e"].private)


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
    assert [(r.result, r.selector) for r in got] == [("pass", "r")]  # it settles a.test: e is not asked
    assert ("r._domainkey.a.test", "TXT") in server.queries
    assert len(keys["r"].txt) > 255  # the record came in several strings
    ed25519_only = (
        dkimpy.sign(MESSAGE, b"e", b"a.test", keys["e"].dkimpy, signature_algorithm=b"ed25519-sha256")
        + MESSAGE
    )
    assert [(r.result, r.selector) for r in await verify(ed25519_only, lookup, NOW)] == [("pass", "e")]


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
