"""`mailflow.tls.client_context` over real handshakes on loopback: unverified (opportunistic STARTTLS,
DANE) it holds no CA at all yet still hands over the server's certificate, which DANE matches; verified,
it trusts the CA file it is given and refuses a certificate from another CA."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailflow import tls
from tests.support.pki import TestCa


async def handshake(ctx: ssl.SSLContext, server: ssl.SSLContext, name: str = "mx.naver.test") -> bytes:
    """The server certificate (DER) the client saw."""
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server)
    try:
        port = srv.sockets[0].getsockname()[1]
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        w.close()
        return der
    finally:
        srv.close()
        await srv.wait_closed()


def der_of(cert_file) -> bytes:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)


async def test_unverified_holds_no_ca_and_still_shows_the_certificate(tmp_path):
    ca = TestCa(tmp_path / "ca")
    cert, key = ca.issue("mx.naver.test")
    ctx = tls.client_context(verify=False, cafile=str(ca.cert))  # the file is not even read
    assert ctx.cert_store_stats() == {"x509": 0, "crl": 0, "x509_ca": 0}
    assert (ctx.verify_mode, ctx.check_hostname, ctx.minimum_version) == (ssl.CERT_NONE, False, ssl.TLSVersion.TLSv1_2)
    server = tls.server_context(str(cert), str(key))
    assert await handshake(ctx, server, "name.not.in.the.certificate") == der_of(cert)


async def test_verified_trusts_its_ca_file_and_refuses_another_ca(tmp_path):
    ours, theirs = TestCa(tmp_path / "ours"), TestCa(tmp_path / "theirs")
    ctx = tls.client_context(verify=True, cafile=str(ours.cert))
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, True)
    good = ours.issue("mx.naver.test")
    assert await handshake(ctx, tls.server_context(*map(str, good))) == der_of(good[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(ctx, tls.server_context(*map(str, theirs.issue("mx.naver.test"))))
