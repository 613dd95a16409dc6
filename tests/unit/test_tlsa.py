"""mailflow.tlsa: what a TLSA selector takes from a certificate and what its matching type makes of it,
for keys of every type a CA issues, and a clear BadCertificate (never another exception) for DER that is
not a certificate, a key type cryptography does not know, or an SPKI it would encode differently."""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailflow import tlsa
from tests.support.pki import self_signed


def certificate(key=None) -> tuple[bytes, bytes]:
    """(DER certificate, DER SubjectPublicKeyInfo as cryptography encodes it)."""
    return self_signed(key)


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _content(der: bytes) -> bytes:
    """The content octets of the DER element `der` starts with."""
    first = der[1]
    skip = 2 if first < 0x80 else 2 + (first & 0x7F)
    return der[skip:]


def with_spki(cert: bytes, old: bytes, new: bytes) -> bytes:
    """`cert` with its SubjectPublicKeyInfo `old` swapped for `new`, lengths made right (the signature
    no longer verifies: DANE-EE does not look at it)."""
    c = x509.load_der_x509_certificate(cert)
    tbs = c.tbs_certificate_bytes
    assert tbs.count(old) == 1
    rest = _content(cert)[len(tbs) :]  # signatureAlgorithm and signatureValue, as they are
    return _der(0x30, _der(0x30, _content(tbs).replace(old, new)) + rest)


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()], ids=["ec", "rsa", "ed25519"])
def test_spki_is_the_certificates_own_octets(key):
    der, public = certificate(key)
    assert tlsa.spki(der) == public and public in der
    assert tlsa.dane_ee(der) == f"3 1 1 {hashlib.sha256(public).hexdigest()}"


def test_each_selector_and_matching_type():
    der, public = certificate()
    assert [tlsa.digest(tlsa.select(der, s), m) for s in (0, 1) for m in (0, 1, 2)] == [
        der, hashlib.sha256(der).digest(), hashlib.sha512(der).digest(),
        public, hashlib.sha256(public).digest(), hashlib.sha512(public).digest(),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="selector 2 unknown"):
        tlsa.select(der, 2)
    with pytest.raises(ValueError, match="matching type 3 unknown"):
        tlsa.digest(der, 3)


@pytest.mark.parametrize("bad", [b"", b"\x30", b"\x30\x84\x00\x00\x00\x01", b"\x31\x00", b"\x30\x02\x30\x00", b"\x30\x05\x30\x03\x02\x01\x01", b"not a certificate"])
def test_garbage_is_a_bad_certificate(bad):
    with pytest.raises(tlsa.BadCertificate, match="not a DER certificate"):
        tlsa.spki(bad)
    assert tlsa.select(bad, 0) == bad  # selector 0 takes the octets as they are


def test_cut_or_flipped_certificates_give_a_bad_certificate_or_an_spki_and_nothing_else():
    der, _ = certificate()
    rng = random.Random(15)
    for _ in range(500):
        broken = bytearray(der[: rng.randrange(len(der))] if rng.random() < 0.3 else der)
        for _ in range(rng.randrange(1, 4)):
            if broken:
                broken[rng.randrange(len(broken))] = rng.randrange(256)
        try:
            out = tlsa.spki(bytes(broken))
        except tlsa.BadCertificate:
            continue
        assert out in broken


def test_a_key_type_cryptography_does_not_know_is_a_bad_certificate():
    der, public = certificate(ed25519.Ed25519PrivateKey.generate())
    unknown = public.replace(bytes.fromhex("06032b6570"), bytes.fromhex("06032b657f"))  # OID 1.3.101.112 -> .127
    with pytest.raises(tlsa.BadCertificate, match="its key is of a type not supported"):
        tlsa.spki(with_spki(der, public, unknown))


def test_a_compressed_ec_point_is_refused_not_hashed_in_another_form():
    """cryptography writes the point uncompressed: a record made from the certificate's own octets would
    never match, and `mailflow dns records` would print a record of octets the certificate lacks."""
    key = ec.generate_private_key(ec.SECP256R1())
    der, public = certificate(key)
    algorithm = public[2:23]  # SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }
    assert algorithm.startswith(b"\x30\x13") and public[23:27] == b"\x03\x42\x00\x04"
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    compressed = _der(0x30, algorithm + _der(0x03, b"\x00" + point))
    odd = with_spki(der, public, compressed)
    assert x509.load_der_x509_certificate(odd).public_key() == key.public_key()  # the same key, another encoding
    with pytest.raises(tlsa.BadCertificate, match="not in the usual DER form"):
        tlsa.dane_ee(odd)
