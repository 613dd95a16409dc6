"""DKIM keys and the DNS that publishes them, for the tests of `mailflow.authn.dkim` and `.arc`.

    key = rsa_key()                                  # or ed25519_key(), rsa_key(512)
    dns = TableDns({"s1._domainkey.a.test": [key.txt]})
    signed = dkimpy.sign(message, b"s1", b"a.test", key.dkimpy) + message
    await verify(signed, dns, now)                   # ours;  dkimpy.verify(..., dnsfunc=dns.dnsfunc)

`TableDns` is a fake of our own DnsLookup Protocol (unit tests only): a name maps to its TXT records,
or to TEMP_FAIL; any other name is NXDOMAIN. `dnsfunc` hands the same table to dkimpy.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailflow.contracts.messages import DnsAnswer

TEMP_FAIL = "temp_fail"


@dataclass(frozen=True)
class Key:
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    dkimpy: bytes  # the private key as dkimpy takes it: PKCS#1 PEM, or the base64 raw Ed25519 seed
    txt: str  # the key record: "v=DKIM1; k=...; p=..."


def rsa_key(bits: int = 2048) -> Key:
    """An RSA key of `bits`; under 1024 (which cryptography will not make) openssl makes it."""
    if bits >= 1024:
        k = rsa.generate_private_key(65537, bits)
    else:
        made = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
            capture_output=True,
            check=True,
        )
        k = ser.load_pem_private_key(made.stdout, None)
        assert isinstance(k, rsa.RSAPrivateKey)
    pem = k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    spki = k.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return Key(k, pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode())


def ed25519_key() -> Key:
    k = ed25519.Ed25519PrivateKey.generate()
    seed = k.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    raw = k.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return Key(k, base64.b64encode(seed), "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode())


class TableDns:
    def __init__(self, table: dict[str, list[str] | str]):
        self.table = table
        self.queries: list[str] = []

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.queries.append(name)
        found = self.table.get(name)
        if found == TEMP_FAIL:
            return DnsAnswer(name=name, type=rdtype, status="temp_fail", error="timeout")
        if found is None:
            return DnsAnswer(name=name, type=rdtype, status="nxdomain")
        return DnsAnswer(name=name, type=rdtype, status="ok" if found else "nodata", records=list(found))

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        found = self.table.get(name.decode().rstrip("."))
        return found[0].encode() if isinstance(found, list) and found else None
