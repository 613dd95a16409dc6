"""The resolver service as a whole: NATS request/reply (`dns.mx`, `dns.query`) and its REST debug endpoints."""

from __future__ import annotations

import asyncio

import httpx

from mailflow import natsconn
from mailflow.dns import DnsClient, MxClient
from mailflow_resolver import app
from mailflow_resolver.settings import Settings
from tests.support import await_for, free_port
from tests.support.dns import DnsServer

ZONE = """
naver.test.     300 IN MX 10 mx.naver.test.
naver.test.     300 IN TXT "v=spf1 mx -all"
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
                txt = await DnsClient(nc, timeout=5).query("naver.test", "TXT")
                assert (txt.status, txt.records, txt.cached) == ("ok", ["v=spf1 mx -all"], False)
                assert (await DnsClient(nc, timeout=5).query("naver.test", "TXT")).cached  # the resolver's cache
                near = DnsClient(nc, timeout=0.5)
                await near.query("naver.test", "MX")
                assert (await http.get("/query/TXT/naver.test")).status_code == 401
                r = await http.get("/query/MX/naver.test", headers={"X-Mailflow-Token": "s3cret"})
                assert r.json()["records"] == ["10 mx.naver.test"]
                r = await http.get("/query/TXT/a%2Fb.naver.test", headers={"X-Mailflow-Token": "s3cret"})
                assert (r.json()["name"], r.json()["status"]) == ("a/b.naver.test", "nxdomain")  # asked DNS
                r = await http.get("/query/SOA/naver.test", headers={"X-Mailflow-Token": "s3cret"})
                assert r.status_code == 422  # only the types of DnsType
                metrics = (await http.get("/metrics")).text
                assert 'mailflow_resolver_requests_total{result="answered",subject="dns.mx"}' in metrics
                assert 'mailflow_resolver_requests_total{result="answered",subject="dns.query"}' in metrics
                assert 'mailflow_resolver_cache_total{result="hit",type="TXT"}' in metrics
            # malformed requests: a temp_fail answer, never silence
            for subject in ("dns.mx", "dns.query"):
                raw = await nc.request(subject, b"not json", timeout=5)
                assert b"temp_fail" in raw.data
            stop.set()
            await asyncio.wait_for(task, 10)
            # the resolver is gone: the client's own copy answers for the record's TTL; what it never had is temp_fail
            mx = await near.query("naver.test", "MX")
            assert (mx.status, mx.records, mx.cached) == ("ok", ["10 mx.naver.test"], True)
            assert (await near.query("daum.test", "MX")).status == "temp_fail"
            assert (await near.query("daum.test", "MX")).status == "temp_fail"  # asked again, not remembered
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await natsconn.close(nc)


async def test_no_resolver_running_is_temp_fail(nats_url):
    nc = await natsconn.connect(nats_url, "test")
    try:
        reply = await MxClient(nc, timeout=0.5).lookup("naver.test")
        assert reply.status == "temp_fail"
        answer = await DnsClient(nc, timeout=0.5).query("naver.test", "TXT")
        assert (answer.status, answer.name, answer.type) == ("temp_fail", "naver.test", "TXT")
        assert answer.error.startswith("resolver")
    finally:
        await natsconn.close(nc)
