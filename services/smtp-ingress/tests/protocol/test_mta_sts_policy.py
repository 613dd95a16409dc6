"""Our MTA-STS policy endpoint (RFC 8461 §3.2): smtp-ingress's HTTPS listener, with a certificate from
a CA the test makes, over real TLS; the store is the real one in this process (behind a switch)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from mailflow import mtasts, tls
from mailflow_smtp_ingress.app import https_server
from mailflow_smtp_ingress.settings import Settings
from tests.support import free_port
from tests.support.doubles import SwitchableDirectory
from tests.support.pki import TestCa


@pytest.fixture
async def endpoint(tmp_path, store):
    """(get, directory): get(host, path="/.well-known/mta-sts.txt") -> (status line, headers, body)."""
    store.add_domain("ours.test")
    ca = TestCa(tmp_path)
    cert, key = ca.issue("mx.ours.test", "mta-sts.ours.test", "mta-sts.theirs.test", "www.ours.test")
    settings = Settings(
        service_token="t", hostname="mx.ours.test", tls_cert=str(cert), tls_key=str(key), listen=f"127.0.0.1:{free_port()}", https_port=free_port(), mta_sts_mode="enforce", nats_url="nats://127.0.0.1:1"
    )
    directory = SwitchableDirectory(store)
    server = await https_server(settings, directory, tls.Certificates(str(cert), str(key)))
    client = ssl.create_default_context(cafile=str(ca.cert))

    async def get(host: str, path: str = mtasts.WELL_KNOWN) -> tuple[str, dict[str, str], bytes]:
        r, w = await asyncio.open_connection("127.0.0.1", server.port, ssl=client, server_hostname=host)
        w.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = await r.read()
        w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        return status, {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}, body

    yield get, directory
    await server.stop()


async def test_the_policy_of_a_domain_of_ours(endpoint):
    get, _ = endpoint
    status, headers, body = await get("mta-sts.ours.test")
    assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith("text/plain")
    assert body == b"version: STSv1\r\nmode: enforce\r\nmx: mx.ours.test\r\nmax_age: 604800\r\n"
    assert mtasts.parse_policy(body) == mtasts.published("enforce", "", 604800, "mx.ours.test")


@pytest.mark.parametrize(
    ("host", "path"),
    [("mta-sts.theirs.test", mtasts.WELL_KNOWN), ("www.ours.test", mtasts.WELL_KNOWN), ("mta-sts.ours.test", "/"), ("mta-sts.ours.test", "/docs")],
    ids=["not-our-domain", "not-mta-sts-name", "root", "no-docs"],
)
async def test_nothing_else_is_served(endpoint, host, path):
    get, _ = endpoint
    status, _, _ = await get(host, path)
    assert status.startswith("HTTP/1.1 404")


async def test_the_store_away_is_a_503_not_a_404(endpoint):
    """A sender keeps its cached policy after a failed fetch (RFC 8461 §5.1); a 404 would be "no policy"."""
    get, directory = endpoint
    directory.down = True
    status, _, _ = await get("mta-sts.ours.test")
    assert status.startswith("HTTP/1.1 503")


def test_a_policy_that_cannot_be_is_refused_at_startup():
    with pytest.raises(ValueError, match="MAILFLOW_SMTP_MTA_STS_.*mode enforce needs at least one mx|not a host name"):
        Settings(service_token="t", hostname="mx.ours.test", mta_sts_mx="*", mta_sts_mode="enforce")
    with pytest.raises(ValueError, match="max_age"):
        Settings(service_token="t", mta_sts_max_age=40_000_000)
