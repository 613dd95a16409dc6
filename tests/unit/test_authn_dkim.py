"""DKIM verification (mailflow.authn.dkim.verify) of what dkimpy, an implementation of its own, signs:
RSA and Ed25519, every canonicalization, l=, folded and over-signed fields; what was changed on the way
fails; each malformed tag, key record and DNS answer ends in the result RFC 6376 / RFC 8301 give it."""

from __future__ import annotations

import asyncio
import time

import dkim as dkimpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.authn import Dkim
from mailflow.authn import dkim as mod
from mailflow.authn.dkim import MAX_HEADER, Keys, sign_with, verify
from tests.support.dkim import TEMP_FAIL, TableDns, ed25519_key, rsa_key
from tests.support.loop import watch

NOW = int(time.time()) + 3600
MESSAGE = (
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test,\r\n  carol@b.test\r\n"
    b"Subject:   Hello\t  there  \r\n\tfolded\r\nDate: Mon, 07 Dec 2026 03:00:00 +0000\r\n"
    b"\r\nLine one  with   spaces \t\r\n\r\n\tindented\r\n\r\n\r\n"
)
CANONS = [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple"), (b"simple", b"relaxed")]


@pytest.fixture(scope="module")
def keys():
    return {"r": rsa_key(), "e": ed25519_key(), "small": rsa_key(512)}


@pytest.fixture
def dns(keys):
    return TableDns(
        {
            "r._domainkey.a.test": [keys["r"].txt],
            "e._domainkey.a.test": [keys["e"].txt],
            "small._domainkey.a.test": [keys["small"].txt],
        }
    )


def sign(message: bytes, key, selector: bytes = b"r", domain: bytes = b"a.test", **kw) -> bytes:
    """dkimpy's signature on top of `message`."""
    if selector == b"e":
        kw.setdefault("signature_algorithm", b"ed25519-sha256")
    return dkimpy.sign(message, selector, domain, key.dkimpy, **kw) + message


def run(message: bytes, dns, **kw) -> list[Dkim]:
    return asyncio.run(verify(message, dns, NOW, **kw))


def results(message: bytes, dns) -> list[tuple[str, str]]:
    return [(r.result, r.reason) for r in run(message, dns)]


@pytest.mark.parametrize("canon", CANONS, ids=lambda c: b"/".join(c).decode())
@pytest.mark.parametrize("length", [False, True], ids=["whole", "l="])
@pytest.mark.parametrize("selector, algorithm", [(b"r", "rsa-sha256"), (b"e", "ed25519-sha256")])
def test_what_dkimpy_signs_verifies(keys, dns, canon, length, selector, algorithm):
    signed = sign(MESSAGE, keys[selector.decode()], selector, canonicalize=canon, length=length)
    got = run(signed, dns)
    assert [(r.result, r.selector, r.algorithm, r.domain) for r in got] == [
        ("pass", selector.decode(), algorithm, "a.test")
    ]
    assert got[0].reason.startswith("l=") == length  # what l= leaves unsigned is said
    assert got[0].b and signed.count(got[0].b.encode()) == 1  # header.b tells them apart


def test_a_domains_rsa_signature_settles_a_dual_signed_message(keys, dns):
    """RFC 6376 §6.1: a verifier may stop once a signature passes. Of one domain's two signatures the
    RSA one (a third of Ed25519's cost) is tried first, whatever their order; the other has no result."""
    for dual in (
        sign(sign(MESSAGE, keys["r"]), keys["e"], b"e"),
        sign(sign(MESSAGE, keys["e"], b"e"), keys["r"]),
    ):
        dns.queries.clear()
        assert [(r.result, r.selector) for r in run(dual, dns)] == [("pass", "r")]
        assert dns.queries == ["r._domainkey.a.test"]


def test_a_domains_next_signature_is_tried_when_one_does_not_pass(keys, dns):
    dual = sign(sign(MESSAGE, keys["r"]), keys["e"], b"e")
    dns.table["r._domainkey.a.test"] = [keys["small"].txt]  # the RSA key does not fit the signature
    assert [(r.result, r.selector) for r in run(dual, dns)] == [("pass", "e"), ("fail", "r")]  # top first
    dns.table["e._domainkey.a.test"] = TEMP_FAIL
    assert [r.result for r in run(dual, dns)] == ["temperror", "fail"]


def test_each_domains_signatures_are_verified(keys, dns):
    dns.table["r._domainkey.b.test"] = [keys["r"].txt]
    signed = sign(sign(sign(MESSAGE, keys["r"]), keys["e"], b"e"), keys["r"], b"r", b"b.test")
    assert [(r.result, r.domain, r.selector) for r in run(signed, dns)] == [
        ("pass", "b.test", "r"),
        ("pass", "a.test", "r"),
    ]


def test_only_the_first_l_octets_are_signed(keys, dns):
    signed = sign(MESSAGE, keys["r"], canonicalize=(b"relaxed", b"relaxed"), length=True)
    assert results(signed + b"P.S. added on the way\r\n", dns) == [
        ("pass", "l=35: only the first 35 body octets are signed")
    ]
    assert results(signed.replace(b"\tindented\r\n", b""), dns) == [("fail", "body shorter than l=35")]


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda m: m.replace(b"Line one", b"Line 1"), "body hash does not match"),
        (lambda m: m.replace(b"Subject:   Hello", b"Subject: Goodbye"), "signature does not verify"),
        (lambda m: m.replace(b"To: bob@b.test", b"To: mallory@evil.test"), "signature does not verify"),
        (lambda m: b"From: mallory@evil.test\r\n" + m, "signature does not verify"),  # From is over-signed
    ],
)
def test_a_change_on_the_way_fails(keys, dns, change, reason):
    signed = sign(
        MESSAGE,
        keys["r"],
        include_headers=[b"from", b"from", b"to", b"subject"],
        canonicalize=(b"relaxed", b"relaxed"),
    )
    assert results(signed, dns) == [("pass", "")]
    assert results(change(signed), dns) == [("fail", reason)]


def test_relaxed_forgives_refolding_and_simple_does_not(keys, dns):
    def refold(m: bytes) -> bytes:
        return m.replace(b"To: bob@b.test,\r\n  carol", b"To: bob@b.test, carol").replace(
            b"with   spaces", b"with spaces"
        )

    relaxed = sign(MESSAGE, keys["e"], b"e", canonicalize=(b"relaxed", b"relaxed"))
    simple = sign(MESSAGE, keys["e"], b"e", canonicalize=(b"simple", b"simple"))
    assert results(refold(relaxed), dns) == [("pass", "")]
    assert results(refold(simple), dns) == [("fail", "body hash does not match")]
    assert results(simple.replace(b"To: bob@b.test,\r\n  carol", b"To: bob@b.test, carol"), dns) == [
        ("fail", "signature does not verify")
    ]
    assert results(b"Received: by mx\r\n" + simple + b"\r\n\r\n", dns) == [
        ("pass", "")
    ]  # unsigned fields, empty lines at the end


def test_fields_are_taken_from_the_bottom_up(keys, dns):
    """§5.4.2: h=x-hop signs the lowest X-Hop field; one added on top changes nothing."""
    two = b"X-Hop: by hop2\r\nX-Hop: by hop1\r\n" + MESSAGE
    signed = sign(two, keys["e"], b"e", include_headers=[b"from", b"x-hop"])
    assert results(b"X-Hop: by hop3\r\n" + signed, dns) == [("pass", "")]
    assert results(signed.replace(b"by hop1", b"by evil"), dns) == [("fail", "signature does not verify")]
    assert results(signed.replace(b"by hop2", b"by evil"), dns) == [("pass", "")]


# --- malformed signatures: permerror before any DNS question (§3.2, §3.5, §6.1.1) ----------------------

BASE = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=r; t=1000; h=from:to; bh=AAAA; b=AAAA"


@pytest.mark.parametrize(
    "edit, reason",
    [
        (("v=1", "v=2"), "v=2, not 1"),
        (("v=1; ", ""), "missing tag v="),
        (("d=a.test; ", ""), "missing tag d="),
        (("bh=AAAA; b=AAAA", "b=AAAA"), "missing tag bh="),
        (("h=from:to; ", ""), "missing tag h="),
        (("s=r; ", ""), "missing tag s="),
        (("d=a.test", "d=a.test; d=b.test"), "malformed DKIM-Signature: tag d twice"),
        (("h=from:to", "h=to:subject"), "h= does not include from"),
        (("h=from:to", "h=from::to"), "h= has an empty or malformed field name"),
        (("d=a.test", "d=a.test; i=@other.test"), "i= is not in d=a.test's domain"),
        (("d=a.test", "d=a.test; i=@bad-a.test"), "i= is not in d=a.test's domain"),
        (("d=a.test", "d=a.test; i=nobody"), "i= is not in d=a.test's domain"),
        (("a=rsa-sha256", "a=rsa-sha512"), "unknown algorithm a=rsa-sha512"),
        (("a=rsa-sha256", "a=rsa-sha1"), "a=rsa-sha1 is not accepted (RFC 8301 §3.1)"),
        (("c=relaxed/relaxed", "c=relaxed/fancy"), "unknown canonicalization c=relaxed/fancy"),
        (("t=1000", "t=1000; x=500"), "x= is before t="),
        (("t=1000", "t=1000; x=1500"), "signature expired (x=)"),
        (("t=1000", "t=1e3"), "t= is not a number of at most 12 digits"),
        (("t=1000", "t=1000; l=-1"), "l= is not a number of at most 76 digits"),
        (("t=1000", "t=1000; q=http/well-known"), "unknown query method q=http/well-known"),
        (("bh=AAAA", "bh=!!!!"), "bh= is not base64"),
        (("d=a.test", "d=a..test"), "d= is not a domain name: 'a..test'"),
        (("s=r", "s=r/../x"), "s= is not a domain name: 'r/../x'"),
        (("t=1000", "t=1000; junk"), "malformed DKIM-Signature: 'junk'"),
        (("t=1000", "t=1000;; x=5"), "malformed DKIM-Signature: ''"),
        (("t=1000", "t=1000; 9x=5"), "malformed DKIM-Signature: '9x=5'"),
        (("s=r", "s=r\x00"), "malformed DKIM-Signature: tag s has a character outside its grammar"),
        (("d=a.test", "d=ä.test"), "DKIM-Signature is not ASCII"),
        (
            ("v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=r; t=1000; h=from:to; bh=AAAA; b=AAAA", ""),
            "missing tags v, a, b, bh, d, h, s",
        ),
    ],
)
def test_a_malformed_signature_is_a_permerror(dns, edit, reason):
    value = BASE.replace(*edit)
    message = f"DKIM-Signature: {value}\r\nFrom: a@a.test\r\nTo: b@b.test\r\n\r\nhi\r\n".encode()
    assert results(message, dns) == [("permerror", reason)]
    assert dns.queries == []


# --- keys (§3.6, §6.1.2, RFC 8301, RFC 8463) ---------------------------------------------------------


def with_record(dns, name: str, records):
    dns.table[name] = records
    return dns


@pytest.mark.parametrize(
    "record, result, reason",
    [
        (None, "permerror", "no key at r._domainkey.a.test"),
        ([], "permerror", "no key at r._domainkey.a.test"),  # NOERROR, no TXT
        (TEMP_FAIL, "temperror", "key r._domainkey.a.test: DNS lookup failed, try later"),
        (["v=DKIM1; k=rsa; p="], "permerror", "key r._domainkey.a.test is revoked (p= empty)"),
        (["v=DKIM1; k=rsa"], "permerror", "malformed key record r._domainkey.a.test: no p="),
        (
            ["v=DKIM1; k=rsa; p=AAAA"],
            "permerror",
            "malformed key record r._domainkey.a.test: p= is no RSA key",
        ),
        (["v=DKIM1; k=rsa; p=@@"], "permerror", "key record r._domainkey.a.test: p= is not base64"),
        (["v=DKIM1; k=dsa; p=AAAA"], "permerror", "key r._domainkey.a.test: unknown key type k=dsa"),
        (
            ["v=DKIM2; p=AAAA"],
            "permerror",
            "malformed key record r._domainkey.a.test: v= must be DKIM1 and first",
        ),
        (
            ["v=DKIM1; k=rsa; k=rsa; p=AAAA"],
            "permerror",
            "malformed key record r._domainkey.a.test: tag k twice",
        ),
        (
            ["v=DKIM1; p=AAAA", "v=DKIM1; p=BBBB"],
            "permerror",
            "2 TXT records at r._domainkey.a.test (RFC 6376 §3.6.2.2: undefined)",
        ),
        (["v=DKIM1; p=\ufffd"], "permerror", "malformed key record r._domainkey.a.test: not ASCII"),
    ],
)
def test_the_key_record_decides(keys, dns, record, result, reason):
    if record is None:
        del dns.table["r._domainkey.a.test"]
    else:
        with_record(dns, "r._domainkey.a.test", record)
    assert results(sign(MESSAGE, keys["r"]), dns) == [(result, reason)]


@pytest.mark.parametrize(
    "record, reason",
    [
        ("v=DKIM1; h=sha1; p={p}", "key r._domainkey.a.test does not allow sha256 (h=sha1)"),
        ("v=DKIM1; s=tlsrpt; p={p}", "key r._domainkey.a.test is not for email (s=tlsrpt)"),
        ("v=DKIM1; k=ed25519; p={p}", "key r._domainkey.a.test is k=ed25519, the signature a=rsa-sha256"),
        ("k=rsa; v=DKIM1; p={p}", "malformed key record r._domainkey.a.test: v= must be DKIM1 and first"),
    ],
)
def test_key_restrictions(keys, dns, record, reason):
    p = keys["r"].txt.rpartition("p=")[2]
    with_record(dns, "r._domainkey.a.test", [record.format(p=p)])
    assert results(sign(MESSAGE, keys["r"]), dns) == [("permerror", reason)]
    with_record(
        dns, "r._domainkey.a.test", [f"h=sha1:sha256; s=email:tlsrpt; p={p}"]
    )  # no v=, lists that allow it
    assert results(sign(MESSAGE, keys["r"]), dns) == [("pass", "")]


def test_ed25519_key_is_the_raw_32_octets(keys, dns):
    signed = sign(MESSAGE, keys["e"], b"e")
    with_record(dns, "e._domainkey.a.test", ["v=DKIM1; k=ed25519; p=" + keys["r"].txt.rpartition("p=")[2]])
    assert results(signed, dns) == [
        ("permerror", "malformed key record e._domainkey.a.test: an Ed25519 key is 32 octets")
    ]


def test_t_s_keys_take_no_subdomain_identity(keys, dns):
    p = keys["r"].txt.rpartition("p=")[2]
    with_record(dns, "r._domainkey.a.test", [f"v=DKIM1; t=y:s; p={p}"])
    assert results(sign(MESSAGE, keys["r"], identity=b"alice@a.test"), dns) == [("pass", "")]
    assert results(sign(MESSAGE, keys["r"], identity=b"@sub.a.test"), dns) == [
        ("permerror", "the key has t=s and i= is a subdomain of d=a.test")
    ]


def test_rfc_8301_rsa_sha1_and_small_keys(keys, dns):
    assert results(sign(MESSAGE, keys["r"], signature_algorithm=b"rsa-sha1"), dns) == [
        ("permerror", "a=rsa-sha1 is not accepted (RFC 8301 §3.1)")
    ]
    assert results(sign(MESSAGE, keys["small"], b"small"), dns) == [
        ("fail", "key small._domainkey.a.test has 512 bits, under 1024 (RFC 8301 §3.2)")
    ]


# --- many signatures, large messages ------------------------------------------------------------------


def test_signatures_past_the_bound_are_not_verified(keys, dns):
    signed = MESSAGE
    for i in range(7):
        dns.table[f"e._domainkey.d{i}.test"] = [keys["e"].txt]
        signed = sign(signed, keys["e"], b"e", f"d{i}.test".encode())
    got = run(signed, dns)
    assert [r.result for r in got] == ["pass"] * 5 + ["neutral"] * 2
    assert got[5] == Dkim(
        "neutral", "d1.test", "e", "ed25519-sha256", got[5].b, "not verified: only the first 5 signatures are"
    )
    assert len(dns.queries) == 5
    assert [r.result for r in run(signed, dns, limit=1)] == ["pass"] + ["neutral"] * 6


def test_signatures_share_a_body_hash(keys, dns, monkeypatch):
    hashed = []
    real = mod._body_hash
    monkeypatch.setattr(mod, "_body_hash", lambda *a: hashed.append(a[2:]) or real(*a))
    for d in ("b.test", "c.test"):
        dns.table[f"e._domainkey.{d}"] = [keys["e"].txt]
    signed = sign(
        sign(sign(MESSAGE, keys["r"]), keys["e"], b"e", b"b.test"),
        keys["e"],
        b"e",
        b"c.test",
        canonicalize=(b"relaxed", b"relaxed"),
    )
    assert [r.result for r in run(signed, dns)] == ["pass"] * 3
    assert sorted(hashed) == [
        (False, None),
        (True, None),
    ]  # two simple bodies (dkimpy's default), one relaxed: one hash each


def test_a_header_block_over_the_limit_is_not_looked_into(keys, dns):
    huge = b"X-Pad: " + b"y" * MAX_HEADER + b"\r\n" + sign(MESSAGE, keys["r"])
    assert results(huge, dns) == [("permerror", f"header block over {MAX_HEADER} octets: not verified")]
    assert results(b"From: a@a.test\r\n\r\nno signature\r\n", dns) == []


def test_nul_and_8bit_octets_in_signed_fields_and_body_are_hashed_as_they_are(keys, dns):
    odd = MESSAGE.replace(b"Hello", b"H\xe9llo \x00").replace(b"Line one", b"Line\x00one \xff")
    signed = sign(odd, keys["e"], b"e", include_headers=[b"from", b"subject"])
    assert results(signed, dns) == [("pass", "")]
    assert results(signed.replace(b"\x00one", b"\x01one"), dns) == [("fail", "body hash does not match")]


def test_a_25_mib_message_verifies_with_the_loop_running(keys, dns):
    """Our two signatures over 25 MiB: the body hashed in a worker thread, the loop ticking meanwhile
    (tests/bench/measure_dkim_verify.py measures the longest pause); the RSA one settles it."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod  \r\n"
    big = MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + line * (25 * 1024 * 1024 // len(line))
    ours = Keys("a.test", "s1", keys["r"].private, keys["e"].private)
    dns.table["s1-rsa._domainkey.a.test"] = [keys["r"].txt]
    dns.table["s1-ed25519._domainkey.a.test"] = [keys["e"].txt]

    signed = asyncio.run(sign_with(big, ours, NOW))
    watched = asyncio.run(watch(verify(signed, dns, NOW)))
    got, ticks = watched.result, watched.ticks
    assert [(r.result, r.algorithm) for r in got] == [("pass", "rsa-sha256")]
    assert ticks >= 5  # a hash on the loop would leave it no tick at all


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.lists(st.sampled_from([b"a", b"b", b" ", b"\t", b"  ", b"\x00"]), max_size=8).map(b"".join),
        max_size=10,
    ),
    canon=st.sampled_from(CANONS),
)
def test_any_body_dkimpy_signs_verifies(lines, canon, keys):
    message = b"From: a@a.test\r\nSubject: s\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)
    dns = TableDns({"e._domainkey.a.test": [keys["e"].txt]})
    assert results(sign(message, keys["e"], b"e", canonicalize=canon), dns) == [("pass", "")]
