"""The DKIM signer against dkimpy's verifier (an implementation of its own): both signatures verify,
relaxed canonicalization holds where it must, a changed body or From fails, a 25 MiB body signs without
holding the event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.authn.dkim import Keys, body_hash, sign_with, split
from mailflow.contracts.rest import DkimSigningKey
from mailflow_delivery.dkim import KeysUnavailable, Signer
from tests.support.loop import watch

PEM = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8, encryption_algorithm=serialization.NoEncryption())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def key_set():
    r, e = rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()
    signing = DkimSigningKey(
        domain="example.test", selector="s1", rsa_private=r.private_bytes(**PEM).decode(), ed25519_private=e.private_bytes(**PEM).decode()
    )
    spki = r.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = e.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    dns = {
        b"s1-rsa._domainkey.example.test.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki),
        b"s1-ed25519._domainkey.example.test.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw),
    }
    return signing, dns


def verify_all(message: bytes, dns: dict) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, top first."""
    d = dkimpy.DKIM(message)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    return [_verify(d, i, dns) for i in range(count)]


def _verify(d: dkimpy.DKIM, idx: int, dns: dict) -> bool:
    try:
        return d.verify(idx=idx, dnsfunc=lambda name, timeout=5: dns.get(name))
    except dkimpy.ValidationError:  # dkimpy raises for a body hash mismatch
        return False


MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@remote.test,\r\n  carol@remote.test\r\n"
    b"Subject:   Hello\t  there  \r\nDate: Mon, 07 Dec 2026 03:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n"
    b"\r\nLine one  with   spaces \t\r\n\r\n\tindented\r\n\r\n\r\n"
)


def sign(message: bytes, key_set) -> bytes:
    return asyncio.run(sign_with(message, Keys.load(key_set[0]), int(time.time())))


def test_both_signatures_verify_and_name_the_usual_fields(key_set):
    signed = sign(MESSAGE, key_set)
    assert verify_all(signed, key_set[1]) == [True, True]
    top = dkimpy.DKIM(signed)
    sigs = [dkimpy.util.parse_tag_value(v) for n, v in top.headers if n.lower() == b"dkim-signature"]
    assert [s[b"a"] for s in sigs] == [b"rsa-sha256", b"ed25519-sha256"]
    assert [s[b"s"] for s in sigs] == [b"s1-rsa", b"s1-ed25519"]
    assert all(s[b"c"] == b"relaxed/relaxed" and s[b"d"] == b"example.test" for s in sigs)
    assert sigs[0][b"h"] == b"from:to:subject:date:message-id:from"  # From over-signed


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.replace(b"Line one", b"Line 1"),  # body
        lambda m: m.replace(b"Subject:   Hello", b"Subject: Goodbye"),  # a signed field
        lambda m: b"From: mallory@evil.test\r\n" + m,  # a second From (over-signed)
        lambda m: m.replace(b"\r\n\r\nLine", b"\r\n\r\nX\r\nLine"),  # a line added on top of the body
    ],
)
def test_a_change_breaks_both(key_set, change):
    signed = sign(MESSAGE, key_set)
    assert verify_all(change(signed), key_set[1]) == [False, False]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.replace(b"with   spaces", b"with spaces"),  # runs of whitespace
        lambda m: m.replace(b"\tindented\r\n", b"\tindented  \r\n"),  # whitespace at a line end
        lambda m: m + b"\r\n\r\n",  # empty lines at the end
        lambda m: m.replace(b"Subject:   Hello", b"subject: Hello"),  # field name case and spacing
        lambda m: m.replace(b"Subject:   Hello\t  there  \r\n", b"Subject: Hello\r\n there\r\n"),  # refolded
        lambda m: b"X-Added: on the way\r\nReceived: by mx\r\n" + m,  # fields not signed
    ],
)
def test_relaxed_changes_still_verify(key_set, change):
    signed = sign(MESSAGE, key_set)
    assert verify_all(change(signed), key_set[1]) == [True, True]


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"\r\n\r\n", b"x", b"x \t", b"a\n\nb\n\n\n", b"x\r\r\n", b"x\r\n\r\r\n\r\n", b"  \r\n \r\n", b"\r\rx\r\n \r\n"],
)
def test_body_hash_is_dkimpys(body):
    from dkim.canonicalization import Relaxed

    crlf = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # dkimpy takes CRLF lines
    # what is sent ends with CRLF (smtp_out.wire_data adds it): dkimpy sees that form
    sent = crlf if crlf.endswith(b"\r\n") or not crlf else crlf + b"\r\n"
    assert body_hash(crlf) == body_hash(sent) == hashlib.sha256(Relaxed.canonicalize_body(sent)).digest()


def test_body_hash_over_slices_is_the_whole(monkeypatch):
    import mailflow.authn.dkim as mod

    body = b"".join(b"line %d  \t\r\n" % i + b"\r\n" * (i % 3) for i in range(5000)) + b"\r\n\r\n"
    whole = body_hash(body)
    monkeypatch.setattr(mod, "SLICE", 37)
    assert body_hash(body) == whole
    from dkim.canonicalization import Relaxed

    assert whole == hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


def test_split_finds_the_body():
    fields, at = split(b"A: 1\r\n b\r\nB:2\r\n\r\nbody\r\n")
    assert fields == [(b"A", b" 1\r\n b"), (b"B", b"2")] and at == 17
    assert split(b"\r\nbody") == ([], 2)
    assert split(b"A: 1\n\nbody")[1] == 6


def test_keys_never_show_their_secrets(key_set):
    keys = Keys.load(key_set[0])
    assert "PRIVATE" not in repr(keys) and "PRIVATE" not in repr(key_set[0]) and "PRIVATE" not in str(key_set[0])
    assert "s1" in repr(keys)


class Store:
    def __init__(self, key):
        self.key, self.calls = key, 0

    async def dkim_signing_key(self, domain):
        self.calls += 1
        if self.key == "down":
            raise OSError("connection refused")
        return self.key if domain.endswith("example.test") else None


def test_signer(key_set):
    async def go():
        now = [0.0]
        store = Store(key_set[0])
        signer = Signer(store, ttl=60, clock=lambda: now[0])
        signed, keys = await signer.sign(MESSAGE)
        assert keys.domain == "example.test" and signed.startswith(b"DKIM-Signature:")
        other = MESSAGE.replace(b"alice@example.test", b"alice@elsewhere.test")
        assert await signer.sign(other) == (other, None)  # not ours: unsigned
        two = b"From: a@example.test, b@example.test\r\n" + MESSAGE.split(b"\r\n", 1)[1]
        assert await signer.sign(two) == (two, None)  # not one From address
        await signer.sign(MESSAGE)
        assert store.calls == 2  # one per domain within the TTL
        now[0] = 61
        store.key = "down"
        with pytest.raises(KeysUnavailable) as caught:
            await signer.sign(MESSAGE)
        assert "PRIVATE" not in str(caught.value)

    asyncio.run(go())


def test_a_25_mib_message_signs_without_holding_the_loop(key_set):
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod  \r\n"
    big = MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + line * (25 * 1024 * 1024 // len(line))
    keys = Keys.load(key_set[0])

    watched = asyncio.run(watch(sign_with(big, keys, int(time.time()))))
    # the loop ran all along (on this machine: ~150 ms to sign, the longest pause ~20 ms)
    assert watched.longest < 0.1, (watched.longest, watched.took)
    signed = watched.result
    assert verify_all(signed, key_set[1]) == [True, True]


@settings(max_examples=400, deadline=None)
@given(body=st.lists(st.sampled_from([b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b"  "]), max_size=60).map(b"".join), slice_at=st.integers(1, 12))
def test_body_hash_matches_dkimpy_on_what_is_sent(body, slice_at, monkeypatch_module):
    """Any body, cut into any slices: the hash of what we sign is dkimpy's hash of what is sent
    (smtp_out.wire_data: bare LF -> CRLF, a CRLF at the end)."""
    from dkim.canonicalization import Relaxed

    from mailflow_delivery.smtp_out import wire_data

    sent = wire_data(body)[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
    if sent.startswith(b".."):
        sent = sent[1:]
    expected = hashlib.sha256(Relaxed.canonicalize_body(sent)).digest()
    monkeypatch_module.setattr("mailflow.authn.dkim.SLICE", slice_at)
    assert body_hash(body) == expected
