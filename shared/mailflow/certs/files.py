"""The certificate and keys on disk: is the pair there due for an order, and writing a new pair safely.

`why_order` reads the certificate every listener serves and says why a new one is needed (None: it is
fine). A file that cannot be read or parsed is a reason to order, never an error. `write_pair` writes the
key (0600) first, then the chain, each as a temporary file in the same folder, fsync'd, then renamed over
the old one (os.replace) and the folder fsync'd: a reader sees the old file or the new one, never half of
one; a failure before the renames leaves the old pair untouched. Listeners that reload on change may see
the new key with the old certificate for an instant and must keep their old context when a pair does
not load. `account_key` loads the ACME account key or makes one (P-256, 0600) the first time.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_PEM_BYTES = 1024 * 1024  # a chain or key larger than this is not ours
AUTO_WINDOW = dt.timedelta(days=30)
SHORT_LIVED = dt.timedelta(days=90)


@dataclass(frozen=True)
class Installed:
    """What the certificate file holds (its first certificate, the leaf)."""

    leaf: x509.Certificate
    names: frozenset[str]

    @property
    def self_signed(self) -> bool:
        return self.leaf.issuer == self.leaf.subject

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def lifetime(self) -> dt.timedelta:
        return self.leaf.not_valid_after_utc - self.leaf.not_valid_before_utc

    def renew_at(self, renew_before_days: float | None) -> dt.datetime:
        """When the renew window opens: `renew_before_days` before expiry, or (None) 30 days before, or a
        third of the lifetime before for a certificate that lives less than 90 days."""
        if renew_before_days is not None:
            window = dt.timedelta(days=renew_before_days)
        else:
            window = self.lifetime / 3 if self.lifetime < SHORT_LIVED else AUTO_WINDOW
        return self.not_after - window


def read_pem(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def installed_names(leaf: x509.Certificate) -> frozenset[str]:
    """The DNS names of a certificate's subjectAltName, lower case."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))


def installed(cert: Path) -> Installed | None:
    """The certificate at `cert`, or None when it is missing, unreadable or not a PEM certificate."""
    try:
        leaf = x509.load_pem_x509_certificate(read_pem(cert))
    except (OSError, ValueError):
        return None
    return Installed(leaf, installed_names(leaf))


def public_key_matches(key_pem: bytes, leaf: x509.Certificate) -> bool:
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return private.public_key().public_bytes(enc, pub) == leaf.public_key().public_bytes(enc, pub)


def key_matches(key: Path, leaf: x509.Certificate) -> bool:
    try:
        return public_key_matches(read_pem(key), leaf)
    except (OSError, ValueError):
        return False


def why_order(
    cert: Path, key: Path, names: list[str], renew_before_days: float | None, now: dt.datetime
) -> str | None:
    """Why a new certificate is needed now, or None when the one at `cert` will do until its window."""
    have = installed(cert)
    if have is None:
        return "no readable certificate"
    if have.self_signed:
        return "the certificate is self-signed"
    missing = [n for n in names if n not in have.names]
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    if not key_matches(key, have.leaf):
        return "the key does not match the certificate"
    if now >= have.renew_at(renew_before_days):
        return f"the certificate expires {have.not_after:%Y-%m-%d %H:%M} UTC"
    return None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_pair(cert: Path, key: Path, chain_pem: bytes, key_pem: bytes) -> None:
    """The key (0600), then the chain (0644), each replaced atomically."""
    _write_atomic(key, key_pem, 0o600)
    _write_atomic(cert, chain_pem, 0o644)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def account_key(path: Path) -> jose.JWKEC:
    """The account key at `path`, made (P-256, 0600) if there is none. ValueError for a file that is
    there but is not an EC private key (it is never overwritten: the account would be lost)."""
    try:
        data = read_pem(path)
    except FileNotFoundError:
        made = new_key()
        _write_atomic(path, key_pem(made), 0o600)
        return jose.JWKEC(key=made)
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: the ACME account key must be an EC private key")
    return jose.JWKEC(key=loaded)
