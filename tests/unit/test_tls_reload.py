"""Certificates picked up without a restart (issue 15): `mailflow.tls.Certificates` over real TLS handshakes
on loopback. A new pair in the files is what the next handshake gets; a connection made before keeps
working; a pair that does not load (a key of another certificate, a half-written file) leaves the
previous one in use, and the complete pair that follows is taken."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailflow import tls
from tests.support.scram import end_point


def pair(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    tls.ensure_self_signed(cert, key, name)
    return cert, key


def client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


async def served_name(port: int, sni: str | None = "mail.example.test") -> str:
    """The common name of the certificate a new TLS connection gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client(), server_hostname=sni)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def put(src: tuple[Path, Path], cert: Path, key: Path) -> None:
    """Install a pair as a renewer does: each file written beside and renamed over the old one."""
    for s, d in zip(src, (cert, key), strict=True):
        shutil.copyfile(s, d.with_suffix(".new"))
        os.replace(d.with_suffix(".new"), d)


async def test_new_pair_on_the_next_handshake_old_connections_kept(tmp_path):
    cert, key = pair(tmp_path / "live", "old.example.test")
    new = pair(tmp_path / "b", "new.example.test")
    certs = tls.Certificates(str(cert), str(key))

    async def echo(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=certs.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await served_name(port) == "old.example.test"
        assert certs.refresh() is False  # nothing changed
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client(), server_hostname="x.test")

        put(new, cert, key)
        assert certs.refresh() is True
        assert await served_name(port) == "new.example.test"
        assert await served_name(port, sni=None) == "new.example.test"  # without SNI as well
        w.write(b"still here\n")  # the connection made before the change goes on, on its old certificate
        assert await asyncio.wait_for(r.readline(), 5) == b"still here\n"
        old = x509.load_der_x509_certificate(w.get_extra_info("ssl_object").getpeercert(binary_form=True))
        assert old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "old.example.test"
        w.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_pair_that_does_not_load_keeps_the_current_one(tmp_path, caplog):
    cert, key = pair(tmp_path / "live", "one.example.test")
    two = pair(tmp_path / "two", "two.example.test")
    certs = tls.Certificates(str(cert), str(key))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=certs.context)
    port = server.sockets[0].getsockname()[1]
    try:
        put((two[0], key), cert, key)  # the new certificate is in, its key not yet: they do not match
        assert certs.refresh() is False
        assert await served_name(port) == "one.example.test"
        assert "new TLS certificate not loaded" in caplog.text
        caplog.clear()
        assert certs.refresh() is False and "not loaded" not in caplog.text  # said once, not every poll

        key.write_bytes(two[1].read_bytes()[:40])  # a key file cut short
        assert certs.refresh() is False
        assert await served_name(port) == "one.example.test"

        put(two, cert, key)  # the whole new pair
        assert certs.refresh() is True
        assert await served_name(port) == "two.example.test"
    finally:
        server.close()
        await server.wait_closed()


async def test_watch_reloads_within_its_interval(tmp_path):
    cert, key = pair(tmp_path / "live", "before.example.test")
    after = pair(tmp_path / "after", "after.example.test")
    certs = tls.Certificates(str(cert), str(key))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=certs.context)
    port = server.sockets[0].getsockname()[1]
    watcher = asyncio.create_task(certs.watch(0.05))
    try:
        cert.write_bytes(after[0].read_bytes())  # written in place (cp over it), key too
        key.write_bytes(after[1].read_bytes())
        for _ in range(100):
            if await served_name(port) == "after.example.test":
                break
            await asyncio.sleep(0.05)
        assert await served_name(port) == "after.example.test"
    finally:
        watcher.cancel()
        server.close()
        await server.wait_closed()


def test_the_expiry_gauge_follows_the_pair_that_loaded(tmp_path):
    """`..._tls_certificate_expiry_timestamp_seconds` is the served leaf's notAfter: set at start, moved by
    a reload, left alone by a pair that does not load (what is served did not change)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauge = Gauge("test_tls_certificate_expiry_timestamp_seconds", "x", registry=registry)

    def value() -> float:
        return registry.get_sample_value("test_tls_certificate_expiry_timestamp_seconds")

    def leaf_not_after(path: Path) -> float:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.ensure_self_signed(cert, key, "short.example.test", days=3)
    longer = tmp_path / "b"
    longer.mkdir()
    tls.ensure_self_signed(longer / "cert.pem", longer / "key.pem", "long.example.test", days=90)
    other = pair(tmp_path / "c", "other.example.test")

    certs = tls.Certificates(str(cert), str(key), expiry=gauge)
    first = leaf_not_after(cert)
    assert value() == first and 2 * 86400 < first - time.time() < 4 * 86400
    put((other[0], key), cert, key)  # a certificate without its key: not loaded, the gauge stays
    assert certs.refresh() is False and value() == first
    put((longer / "cert.pem", longer / "key.pem"), cert, key)
    assert certs.refresh() is True
    assert value() == leaf_not_after(cert) == leaf_not_after(longer / "cert.pem")
    assert 89 * 86400 < value() - time.time() < 91 * 86400


def test_both_listening_services_set_their_expiry_gauge(tmp_path):
    """smtp-ingress and imap-pop3 hand their own gauge to the Certificates every TLS listener uses."""
    from prometheus_client import REGISTRY

    import mailflow_imap_pop3.app as imap_app
    import mailflow_smtp_ingress.app as smtp_app
    from mailflow_imap_pop3.settings import Settings as ImapSettings
    from mailflow_smtp_ingress.settings import Settings as SmtpSettings

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.ensure_self_signed(cert, key, "mail.example.test", days=10)
    expected = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.timestamp()
    for module, settings, name in (
        (smtp_app, SmtpSettings(service_token="t", tls_cert=str(cert), tls_key=str(key)), "mailflow_smtp"),
        (imap_app, ImapSettings(service_token="t", tls_cert=str(cert), tls_key=str(key)), "mailflow_imap"),
    ):
        module.certificates(settings)
        assert REGISTRY.get_sample_value(f"{name}_tls_certificate_expiry_timestamp_seconds") == expected


async def test_channel_binding_is_the_certificate_each_connection_was_served(tmp_path):
    """tls-server-end-point (RFC 5929 §4.1) as SCRAM-SHA-256-PLUS binds to it: the server's value for a
    connection is the hash of the certificate that connection got, before and after a reload."""
    cert, key = pair(tmp_path / "live", "old.example.test")
    new = pair(tmp_path / "b", "new.example.test")
    certs = tls.Certificates(str(cert), str(key))

    async def bindings(reader, writer):
        while await reader.readline():
            found = tls.channel_bindings(writer.get_extra_info("ssl_object"))
            writer.write(found["tls-server-end-point"].hex().encode() + b"\n")
            await writer.drain()
        writer.close()

    async def ask(r, w) -> tuple[str, str]:
        w.write(b"?\n")
        server_side = (await asyncio.wait_for(r.readline(), 5)).strip().decode()
        return server_side, end_point(w.get_extra_info("ssl_object"))[1].hex()

    server = await asyncio.start_server(bindings, "127.0.0.1", 0, ssl=certs.context)
    port = server.sockets[0].getsockname()[1]
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port, ssl=client(), server_hostname="x.test")
        first, seen = await ask(r1, w1)
        assert first == seen
        put(new, cert, key)
        assert certs.refresh() is True
        r2, w2 = await asyncio.open_connection("127.0.0.1", port, ssl=client(), server_hostname="x.test")
        second, seen = await ask(r2, w2)
        assert second == seen and second != first
        assert (await ask(r1, w1))[0] == first  # the older connection keeps its own
        w1.close()
        w2.close()
    finally:
        server.close()
        await server.wait_closed()


def test_end_point_hash_follows_the_signature_hash():
    """RFC 5929 §4.1: the certificate's signature hash (SHA-256 in place of MD5 and SHA-1, which this
    cryptography build will not sign with, so that branch is not exercised here)."""
    import datetime
    import hashlib

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h.test")])
    now = datetime.datetime.now(datetime.UTC)
    base = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    )  # fmt: skip
    builder = base.public_key(key.public_key())
    for algorithm, expected in ((hashes.SHA384(), hashlib.sha384), (hashes.SHA512(), hashlib.sha512),
                                (hashes.SHA256(), hashlib.sha256)):  # fmt: skip
        certificate = builder.sign(key, algorithm)
        der = certificate.public_bytes(serialization.Encoding.DER)
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        assert tls.end_point_hash(pem) == expected(der).digest()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = ed25519.Ed25519PrivateKey.generate()  # no separate hash in the signature: SHA-256
    certificate = base.public_key(ed.public_key()).sign(ed, None)
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert tls.end_point_hash(certificate.public_bytes(serialization.Encoding.PEM)) == hashlib.sha256(der).digest()
