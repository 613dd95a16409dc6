"""TLSA (RFC 6698 §2.1): what a record's selector takes from a certificate and what its matching type
makes of that. One implementation for both ends of DANE: delivery matches an MX host's certificate
against the host's records (mailflow_delivery/dane.py), and `mailflow dns records` prints the
"3 1 1" record of our own certificate (mailflow/cli/dns.py).

Selector 0 is the certificate's DER as it came; selector 1 its SubjectPublicKeyInfo, which
`cryptography` reads from the certificate and encodes again as DER. That is the certificate's own
octets for every key a CA issues (RSA, EC with an uncompressed point, Ed25519), and is checked to be:
an SPKI cryptography would write differently (an EC key with a compressed point, an RSA-PSS key with
its parameters) is refused rather than hashed in a form the record's author never saw.

Failure: `BadCertificate` (a ValueError) says why a certificate gives no SubjectPublicKeyInfo: not a
DER certificate, a key of a type cryptography does not know, or the encoding above; nothing else
escapes.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

DIGESTS = {1: hashlib.sha256, 2: hashlib.sha512}  # matching type -> digest (0: the selected octets themselves)


class BadCertificate(ValueError):
    pass


def spki(cert: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate (RFC 5280 §4.1), or BadCertificate."""
    try:
        key = x509.load_der_x509_certificate(cert).public_key()
    except UnsupportedAlgorithm as exc:
        raise BadCertificate(f"its key is of a type not supported ({exc})") from exc
    except ValueError as exc:
        raise BadCertificate(f"not a DER certificate ({exc})") from exc
    out = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if out not in cert:
        raise BadCertificate("its SubjectPublicKeyInfo is not in the usual DER form (a compressed EC point?)")
    return out


def select(cert: bytes, selector: int) -> bytes:
    """What `selector` takes from `cert` (DER): 0 the certificate, 1 its SubjectPublicKeyInfo
    (BadCertificate when there is none to take); ValueError for other selectors."""
    if selector == 0:
        return cert
    if selector == 1:
        return spki(cert)
    raise ValueError(f"selector {selector} unknown")


def digest(selected: bytes, mtype: int) -> bytes:
    """Matching type `mtype` (0: exact, 1: SHA-256, 2: SHA-512) of the selected octets; ValueError for others."""
    if mtype == 0:
        return selected
    if mtype not in DIGESTS:
        raise ValueError(f"matching type {mtype} unknown")
    return DIGESTS[mtype](selected).digest()


def dane_ee(cert: bytes) -> str:
    """The DANE-EE record of `cert` (DER) by its key's SHA-256, RFC 7672 §3.1.1's "3 1 1": it stays
    valid across renewals that keep the key."""
    return f"3 1 1 {digest(select(cert, 1), 1).hex()}"
