"""The resolver service as a whole: NATS request/reply and its REST debug endpoint."""

from __future__ import annotations

import asyncio

import httpx

from mailflow import natsconn
from mailflow.dns import MxClient
from mailflow_resolver import app
from mailflow_resolver.settings import Settings
from tests.support import await_for, free_port
from tests.support.dns import DnsServer

ZONE = """
naver.test.     300 IN MX 10 mx.naver.test.
mx.naver.test.  300 IN A 127.0.0.3
"""


async def test_request_reply_and_rest(nats_url):
    with DnsServer(ZONE) as dns:
        port = free_port()
        settings = Settings(
            nats_url=nats_url, service_token="s3cret", http_listen=f"127.0.0.1:{port}", nameservers=dns.address
        )
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(settings, stop))
        nc = await natsconn.connect(nats_url, "test")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def ready():
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await await_for(ready, what="resolver ready")
                reply = await MxClient(nc, timeout=5).lookup("naver.test")
                assert reply.status == "ok" and reply.hosts[0].addresses == ["127.0.0.3"]
                assert (await http.get("/mx/naver.test")).status_code == 401
                r = await http.get("/mx/naver.test", headers={"X-Mailflow-Token": "s3cret"})
                assert r.json()["hosts"][0]["host"] == "mx.naver.test"
                metrics = (await http.get("/metrics")).text
                assert 'mailflow_resolver_requests_total{result="answered"}' in metrics
            # malformed request: a temp_fail answer, never silence
            raw = await nc.request("dns.mx", b"not json", timeout=5)
            assert b"temp_fail" in raw.data
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await natsconn.close(nc)


async def test_no_resolver_running_is_temp_fail(nats_url):
    nc = await natsconn.connect(nats_url, "test")
    try:
        reply = await MxClient(nc, timeout=0.5).lookup("naver.test")
        assert reply.status == "temp_fail"
    finally:
        await natsconn.close(nc)
