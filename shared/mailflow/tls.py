"""TLS for every listener: contexts with TLS 1.2 as the floor, certificates picked up again when their
files change, and a self-signed pair for local runs.

`server_context` raises FileNotFoundError/ssl.SSLError at startup when the certificate or key is
missing or unreadable, so a service never starts advertising STARTTLS it cannot do (and ValueError when
the certificate file is replaced while it loads: `Certificates` tries again at the next look).
`Certificates` keeps a listener's pair current without a restart: the context the listeners hand to
every handshake (STARTTLS and implicit TLS alike) switches each new connection, while its ClientHello is
read, to the context of the newest pair that loaded (`SSLObject.context`); connections already open keep
the certificate they began with. `watch` looks at the files (inode, size, mtime: a renamed-in file, a
Kubernetes Secret's symlink swap, an ACME renewal, `cp` over them) every few seconds; a pair that does not
load (a key that does not match, a half-written file) is logged once and the previous one stays in use.
`ensure_self_signed` writes a new pair only when none exists (the key file is mode 0600).
Given a gauge (`expiry`, each listening service's `..._tls_certificate_expiry_timestamp_seconds`),
`Certificates` sets it to the notAfter of the leaf it serves (Unix time) whenever a pair loads, so an
alert sees a certificate nearing its end, renewed or not; a leaf whose date cannot be read (which a pair
that loaded hardly has) sets it to 0, the already-expired value, rather than leaving an old date.
`channel_bindings` gives what SCRAM-SHA-256-PLUS can bind to on a connection (RFC 5929): the
`tls-server-end-point` hash of the certificate that connection was served (each context from
`server_context` carries its own, so a reload never mixes them up) and `tls-unique` on TLS 1.2 only (it
is undefined for TLS 1.3, RFC 9266 §1; `tls-exporter` itself is beyond Python's ssl module).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger(__name__)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    pem = Path(cert).read_bytes()
    ctx.load_cert_chain(cert, key)
    if Path(cert).read_bytes() != pem:  # replaced while loading: the hash would not be the served one's
        raise ValueError("the certificate file changed while it was loaded")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.mailflow_end_point = end_point_hash(pem)  # type: ignore[attr-defined]
    except ValueError as exc:  # OpenSSL took it, cryptography did not: no tls-server-end-point then
        log.warning("no tls-server-end-point channel binding for this certificate", extra={"error": repr(exc)})
    return ctx


MAX_PEM_BYTES = 1024 * 1024  # a certificate chain larger than this is not ours


def end_point_hash(chain_pem: bytes) -> bytes:
    """RFC 5929 §4.1 tls-server-end-point: the hash of the (first, the server's) certificate's DER with
    the hash function of its signature, SHA-256 where that is MD5 or SHA-1, or where the signature has
    no separate hash (Ed25519: RFC 5929 does not say; SHA-256 is what other servers use)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    certificate = x509.load_pem_x509_certificate(chain_pem)
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(serialization.Encoding.DER))
    return digest.finalize()


def channel_bindings(ssl_object) -> dict[str, bytes]:
    """The channel binding data a connection can give SCRAM-SHA-256-PLUS, by type (none without TLS)."""
    if ssl_object is None:
        return {}
    out: dict[str, bytes] = {}
    end_point = getattr(ssl_object.context, "mailflow_end_point", None)
    if end_point is not None:
        out["tls-server-end-point"] = end_point
    if ssl_object.version() == "TLSv1.2":
        unique = ssl_object.get_channel_binding("tls-unique")
        if unique:
            out["tls-unique"] = unique
    return out


def not_after(cert: str) -> float:
    """The notAfter of the first certificate (the leaf) in a PEM file, as Unix time. OSError when the
    file cannot be read, ValueError when it is too large or holds no PEM certificate."""
    from cryptography import x509

    with open(cert, "rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{cert} is larger than {MAX_PEM_BYTES} bytes")
    return x509.load_pem_x509_certificate(data).not_valid_after_utc.timestamp()


class Certificates:
    """A certificate chain and key from files, for every listener of a service; reloaded by `watch`.
    `expiry`: a gauge set to the served leaf's notAfter (Unix time) at each load."""

    def __init__(self, cert: str, key: str, expiry: Gauge | None = None):
        self.cert, self.key, self.expiry = cert, key, expiry
        self._seen = self._stamp()
        self.current = server_context(cert, key)  # the newest pair that loaded
        self._record_expiry()
        # what listeners are given: it picks `current` for each new connection during its handshake
        self.context = server_context(cert, key)
        self.context.sni_callback = self._pick
        self._refused: tuple | None = None  # the files' stamp whose pair did not load (logged once)

    def _pick(self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.context = self.current  # OpenSSL runs this for every ClientHello, SNI or not

    def _stamp(self) -> tuple:
        out = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def refresh(self) -> bool:
        """Load the pair again if its files changed; True if new connections now get a new one."""
        stamp = self._stamp()
        if stamp == self._seen or stamp == self._refused:
            return False
        try:
            ctx = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:  # mid-write, or a key for another certificate
            self._refused = stamp
            extra = {"cert": self.cert, "error": repr(exc)}
            log.warning("new TLS certificate not loaded; keeping the current one", extra=extra)
            return False
        self._seen, self._refused, self.current = stamp, None, ctx
        self._record_expiry()
        log.info("TLS certificate reloaded", extra={"cert": self.cert})
        return True

    def _record_expiry(self) -> None:
        if self.expiry is None:
            return
        try:
            self.expiry.set(not_after(self.cert))
        except (OSError, ValueError) as exc:  # the file changed again since it loaded: the next refresh reads it
            log.warning("TLS certificate's expiry not read", extra={"cert": self.cert, "error": repr(exc)})
            self.expiry.set(0)

    async def watch(self, interval: float) -> None:
        """Refresh every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.refresh()
            except Exception:  # never let a reload bug take TLS down: the current pair stays
                log.exception("TLS certificate reload failed")


def client_context(verify: bool = True, cafile: str | None = None) -> ssl.SSLContext:
    """For outgoing SMTP: opportunistic STARTTLS uses verify=False (RFC 7435), like every MTA by default.

    verify=False loads no CA at all (`cafile` is not read): OpenSSL builds and checks every server's
    chain even when told to ignore the result, and with the system's CAs loaded, a certificate whose
    issuer they lack (a self-signed MX: DANE-EE's usual case) costs a search of /etc/ssl/certs on each
    handshake (measured on the 2-core dev machine, both ends of a handshake in one process: 1.15 ms
    with them, 0.85 ms without). With no CA the check ends at once; DANE matches the certificate
    itself (dane.py)."""
    if verify:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the same defaults as create_default_context, no CA
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def describe(obj) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for an SSLObject/SSLSocket, None for plain text."""
    if obj is None:
        return None
    try:
        cipher = obj.cipher()
        return f"{obj.version()} {cipher[0]}" if cipher else obj.version()
    except Exception:
        return None


def ensure_self_signed(cert: Path, key: Path, hostname: str = "localhost", days: int = 825) -> bool:
    """Create a self-signed certificate for `hostname`, localhost and 127.0.0.1 unless one exists.
    Returns True if it wrote a new pair."""
    cert, key = Path(cert), Path(key)
    if cert.exists() and key.exists():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(hostname), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            pkey.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True
