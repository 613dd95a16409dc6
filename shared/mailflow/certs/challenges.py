"""The two challenge responders the ACME server talks to: HTTP-01 (RFC 8555 §8.3) and TLS-ALPN-01 (RFC 8737).

`Responders` holds what is being proven right now (tokens for HTTP-01, per-name certificates for
TLS-ALPN-01); the order thread fills it before it answers a challenge and empties it afterwards. Both
listeners run on the renewer's event loop for the life of the process:

- HTTP-01 answers `GET /.well-known/acme-challenge/<token>` with the key authorization and everything
  else with 404; one request per connection, the request head at most 8 KiB, read within 10 s.
- TLS-ALPN-01 completes a handshake only for a name being proven and only with ALPN "acme-tls/1",
  presenting a self-signed certificate for that one name whose critical id-pe-acmeIdentifier extension
  holds the SHA-256 of the key authorization; then it closes. Any other handshake fails.

A connection beyond `MAX_CONNECTIONS` is closed at once. acme (certbot's library) dropped its
TLS-ALPN-01 classes; the two message classes below are registered with it in its own way (its
`Challenge.register`), so an order offers "tls-alpn-01" as a known challenge with a key authorization.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import josepy as jose
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier

from mailflow.certs import files
from mailflow.hostport import split_hostport

log = logging.getLogger(__name__)

ALPN = "acme-tls/1"  # RFC 8737 §6.2
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier, RFC 8737 §6.1
MAX_HEAD = 8192
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
WELL_KNOWN = "/.well-known/acme-challenge/"


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The response to tls-alpn-01: an empty object, as every key-authorization response is (RFC 8555 §7.5.1)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737: the validation is the SHA-256 of the key authorization, put in the certificate."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **unused: Any) -> bytes:
        return hashlib.sha256(self.key_authorization(account_key).encode()).digest()


def alpn_certificate(name: str, digest: bytes) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for proving `name` (RFC 8737 §3): self-signed, the name its only SAN,
    the acmeIdentifier extension critical and holding the digest as a DER OCTET STRING."""
    key = files.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM), files.key_pem(key)


def _alpn_context(cert_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN])
    if cert_pem is not None and key_pem is not None:
        # ssl loads a certificate only from files: a private folder, removed once loaded
        with tempfile.TemporaryDirectory(prefix="mailflow-acme-") as d:
            cert_path, key_path = Path(d, "cert.pem"), Path(d, "key.pem")
            cert_path.write_bytes(cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            ctx.load_cert_chain(cert_path, key_path)
    return ctx


class Responders:
    """What the listeners answer with. Filled and emptied by the order thread (plain dict updates)."""

    def __init__(self) -> None:
        self.http: dict[str, str] = {}  # token -> key authorization
        self.tls: dict[str, ssl.SSLContext] = {}  # name -> context presenting its challenge certificate
        self._servers: list[asyncio.AbstractServer] = []
        self._open = 0

    def prove_http(self, token: str, key_authorization: str) -> None:
        self.http[token] = key_authorization

    def prove_tls(self, name: str, digest: bytes) -> None:
        self.tls[name.lower()] = _alpn_context(*alpn_certificate(name, digest))

    def clear(self) -> None:
        self.http.clear()
        self.tls.clear()

    # --- listeners --------------------------------------------------------------------------------

    async def start(self, http_listen: str | None, tls_listen: str | None) -> None:
        """Bind the listeners asked for (OSError if an address cannot be bound)."""
        if http_listen:
            host, port = split_hostport(http_listen)
            self._servers.append(await asyncio.start_server(self._http, host, port, limit=MAX_HEAD))
        if tls_listen:
            ctx = _alpn_context()
            ctx.sni_callback = self._pick_context
            host, port = split_hostport(tls_listen)
            server = await asyncio.start_server(
                self._tls, host, port, ssl=ctx, ssl_handshake_timeout=READ_TIMEOUT
            )
            self._servers.append(server)

    def addresses(self) -> list[tuple[str, int]]:
        return [s.sockets[0].getsockname()[:2] for s in self._servers]

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()

    def _pick_context(self, sslobj, server_name: str | None, initial: ssl.SSLContext) -> int | None:
        ctx = self.tls.get((server_name or "").lower())
        if ctx is None:
            log.info("tls-alpn-01: refused a handshake for a name not being proven")
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = ctx
        return None

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handshake (certificate chosen by SNI, ALPN agreed) is all the validation needs.
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() == ALPN:
            log.info("tls-alpn-01: presented the challenge certificate")
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            writer.write(self.http_reply(head))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, OSError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def http_reply(self, head: bytes) -> bytes:
        """The whole reply to one request head: 200 with the key authorization, else 404 or 405."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return _reply(405, "Method Not Allowed", b"")
        path = parts[1]
        token = path[len(WELL_KNOWN) :] if path.startswith(WELL_KNOWN) else None
        answer = self.http.get(token) if token else None
        if answer is None:
            return _reply(404, "Not Found", b"")
        log.info("http-01: answered a challenge")
        return _reply(200, "OK", answer.encode() if parts[0] == "GET" else b"", len(answer))


def _reply(code: int, reason: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
