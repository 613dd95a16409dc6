"""ARC (mailflow.authn.arc): chains dkimpy seals verify with ours, ours verify with dkimpy's arc_verify
(the independent verifier) and with ours; each way a chain breaks fails with its reason."""

from __future__ import annotations

import asyncio
import time

import dkim as dkimpy
import pytest

from mailflow.authn import Arc
from mailflow.authn.arc import AS, MAX_INSTANCES, arc_sets, fold_results, seal, seal_data, verify_chain
from mailflow.authn.dkim import Keys, b64, parse_key, split, tags
from mailflow.authn.dkim import check as check_signature
from tests.support.dkim import TEMP_FAIL, TableDns, ed25519_key, rsa_key

NOW = int(time.time())
MESSAGE = (
    b"Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=alice@a.test\r\n"
    b"From: Alice <alice@a.test>\r\nTo: list@lists.test\r\nSubject: hello\r\n\r\nHello  there\r\n"
)


@pytest.fixture(scope="module")
def keys():
    return {"r": rsa_key(), "fwd": rsa_key(), "small": rsa_key(512)}


@pytest.fixture
def dns(keys):
    return TableDns({"r._domainkey.a.test": [keys["r"].txt], "k1-rsa._domainkey.fwd.test": [keys["fwd"].txt]})


@pytest.fixture(scope="module")
def ours(keys):
    return Keys("fwd.test", "k1", keys["fwd"].private, ed25519_key().private)


def dkimpy_seal(message: bytes, key, arc: str = "", host: str = "mx.a.test") -> bytes:
    """dkimpy's next ARC set on top of `message`, from the results of `host` (and arc=`arc`): dkimpy
    seals what the Authentication-Results fields of that authserv-id say."""
    if arc:
        message = f"Authentication-Results: {host}; arc={arc}\r\n".encode() + message
    return (
        b"".join(dkimpy.arc_sign(message, b"r", b"a.test", key.dkimpy, host.encode(), timestamp=NOW))
        + message
    )


def check(message: bytes, dns) -> Arc:
    return asyncio.run(verify_chain(message, dns, NOW))


def dkimpy_check(message: bytes, dns) -> tuple[bytes, str]:
    cv, _, reason = dkimpy.arc_verify(message, dnsfunc=dns.dnsfunc)
    return cv, reason


@pytest.fixture(scope="module")
def chain2(keys):
    return dkimpy_seal(dkimpy_seal(MESSAGE, keys["r"]), keys["r"], arc="pass")


def test_dkimpys_chains_pass(keys, dns, chain2):
    assert check(MESSAGE, dns) == Arc("none")
    assert check(dkimpy_seal(MESSAGE, keys["r"]), dns) == Arc("pass", 1)
    assert check(chain2, dns) == Arc("pass", 2)


@pytest.mark.parametrize(
    ("authres", "folded"),
    [
        ("spf=pass smtp.mailfrom=a.test", "spf=pass smtp.mailfrom=a.test"),
        ("spf=pass smtp.mailfrom=a.test; dkim=none;arc=none", "spf=pass smtp.mailfrom=a.test;\r\n\tdkim=none;\r\n\tarc=none"),
        ('dkim=fail reason="bad; \\"really\\"; bad" header.d=a.test; arc=none', 'dkim=fail reason="bad; \\"really\\"; bad" header.d=a.test;\r\n\tarc=none'),
        ("", ""),
    ],
)
def test_results_are_folded_one_a_line_never_inside_a_reason(authres, folded):
    assert fold_results(authres) == folded


def test_a_long_list_of_results_is_sealed_in_lines_rfc_5322_allows(keys, dns, ours):
    """What a forwarder carries over from an Authentication-Results with five DKIM signatures and long
    reasons: unfolded on one line it would be over 998 octets."""
    authres = "; ".join(f'dkim=fail reason="{"x" * 190}" header.d=d{n}.test header.s=s' for n in range(5))
    sealed = asyncio.run(seal(MESSAGE, authres, ours, "mx.fwd.test", NOW, Arc("none")))
    assert max(len(line) for line in sealed.split(b"\r\n")) < 998
    assert dkimpy_check(sealed, dns) == (b"pass", "success")
    assert check(sealed, dns) == Arc("pass", 1)


def test_our_seal_verifies_with_dkimpy_and_ours(keys, dns, ours, chain2):
    first = asyncio.run(seal(MESSAGE, "spf=pass smtp.mailfrom=a.test", ours, "mx.fwd.test", NOW, Arc("none")))
    assert first.startswith(b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fwd.test;\r\n\ts=k1-rsa;")
    assert b"ARC-Authentication-Results: i=1; mx.fwd.test;\r\n\tspf=pass smtp.mailfrom=a.test\r\n" in first
    assert dkimpy_check(first, dns) == (b"pass", "success")
    assert check(first, dns) == Arc("pass", 1)

    third = asyncio.run(seal(chain2, "arc=pass", ours, "mx.fwd.test", NOW, check(chain2, dns)))
    assert third.startswith(b"ARC-Seal: i=3; a=rsa-sha256; cv=pass;")
    assert dkimpy_check(third, dns) == (b"pass", "success")
    assert check(third, dns) == Arc("pass", 3)
    fourth = dkimpy_seal(third, keys["r"], arc="pass", host="mx.b.test")  # dkimpy seals on top of ours
    assert check(fourth, dns) == Arc("pass", 4)


def drop(message: bytes, prefix: bytes) -> bytes:
    """`message` without the (folded) field that starts with `prefix`."""
    start = message.index(prefix)
    end = start + message[start:].index(b"\r\n")
    while message[end + 2 : end + 3] in (b" ", b"\t"):
        end += 2 + message[end + 2 :].index(b"\r\n")
    return message[:start] + message[end + 2 :]


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            lambda m: m.replace(b"Hello  there", b"Hello  world"),
            "ARC-Message-Signature i=2: body hash does not match",
        ),
        (
            lambda m: m.replace(b"Subject: hello", b"Subject: HELLO"),
            "ARC-Message-Signature i=2: signature does not verify",
        ),
        (
            lambda m: m.replace(b"i=1; mx.a.test", b"i=1; mx.evil.test"),
            "ARC-Seal i=2: signature does not verify",
        ),
        (lambda m: drop(m, b"ARC-Message-Signature: i=1"), "ARC set i=1 has no ARC-Message-Signature"),
        (
            lambda m: drop(
                drop(drop(m, b"ARC-Seal: i=1"), b"ARC-Message-Signature: i=1"),
                b"ARC-Authentication-Results: i=1",
            ),
            "ARC set i=1 is missing",
        ),
        (lambda m: m.replace(b"ARC-Seal: i=1", b"ARC-Seal: i=2"), "two ARC-Seal with i=2"),
        (lambda m: m.replace(b"ARC-Seal: i=2", b"ARC-Seal: i=51"), "ARC-Seal without a valid i= (1..50)"),
        (
            lambda m: m.replace(b"i=2; cv=pass", b"i=2; cv=fail"),
            "ARC-Seal i=2 says cv=fail: the chain failed before us",
        ),
        (lambda m: m.replace(b"i=1; cv=none", b"i=1; cv=pass"), "ARC-Seal i=1 has cv=pass, not none"),
        (lambda m: m.replace(b"i=2; cv=pass", b"i=2; cv=none"), "ARC-Seal i=2 has cv=none, not pass"),
    ],
)
def test_a_broken_chain_fails(dns, chain2, change, reason):
    assert check(change(chain2), dns) == Arc("fail", 2, reason)


def test_keys_dns_and_rfc_8301(keys, dns, chain2):
    dns.table["r._domainkey.a.test"] = TEMP_FAIL
    assert check(chain2, dns) == Arc(
        "fail", 2, "ARC-Message-Signature i=2: key r._domainkey.a.test: DNS lookup failed, try later (DNS)"
    )
    del dns.table["r._domainkey.a.test"]
    assert check(chain2, dns).reason == "ARC-Message-Signature i=2: no key at r._domainkey.a.test"
    small = dkimpy_seal(MESSAGE, keys["small"])
    dns.table["r._domainkey.a.test"] = [keys["small"].txt]
    assert (
        check(small, dns).reason
        == "ARC-Message-Signature i=1: key r._domainkey.a.test has 512 bits, under 1024 (RFC 8301 §3.2)"
    )


def test_sealing_a_failed_chain(keys, dns, ours, chain2):
    broken = chain2.replace(b"Hello  there", b"Hello  world")
    chain = check(broken, dns)
    sealed = asyncio.run(seal(broken, "arc=fail", ours, "mx.fwd.test", NOW, chain))
    assert sealed.startswith(b"ARC-Seal: i=3; a=rsa-sha256; cv=fail;")
    assert check(sealed, dns) == Arc("fail", 3, "ARC-Seal i=3 says cv=fail: the chain failed before us")
    assert dkimpy_check(sealed, dns) == (None, "ARC-Seal[3] reported failure, the chain is terminated")
    sets = arc_sets(split(sealed)[0])  # the seal signs its own set only (nobody checks it: the chain ended)
    seal_3 = tags(sets[3][AS][1])
    check_signature(
        parse_key(keys["fwd"].txt, "k1-rsa", "rsa-sha256"),
        b64(seal_3["b"], "b"),
        seal_data(sets, 3, own_only=True),
    )
    # once a seal says fail, nobody adds to the chain
    assert asyncio.run(seal(sealed, "arc=fail", ours, "mx.fwd.test", NOW, check(sealed, dns))) == sealed


def test_seal_refuses_what_it_cannot_do(ours, chain2):
    with pytest.raises(ValueError, match="the chain is not this message's: i=1, the message has 2 ARC sets"):
        asyncio.run(seal(chain2, "arc=pass", ours, "mx.fwd.test", NOW, Arc("pass", 1)))
    with pytest.raises(ValueError, match="one line each"):
        asyncio.run(seal(MESSAGE, "spf=pass\r\nBcc: x@evil.test", ours, "mx.fwd.test", NOW, Arc("none")))
    full = Arc("pass", MAX_INSTANCES)  # a 51st set would be invalid (RFC 8617 §4.2.1): left as it is
    assert asyncio.run(seal(chain2, "arc=pass", ours, "mx.fwd.test", NOW, full)) == chain2
