"""The queue service as a whole (app.run): admin REST like postqueue/postsuper, traces, health."""

from __future__ import annotations

import asyncio

import httpx

from mailflow.bodies import JetStreamBodies
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    DeliveryResult,
    DeliveryResults,
    QueuedMessage,
    QueuedMessages,
    Recipient,
    TraceEvent,
)
from mailflow_queue import app
from mailflow_queue.settings import Settings
from tests.support import await_for, free_port

ADMIN = {"X-Mailflow-Admin-Token": "adm1n"}


async def test_admin_rest_and_trace(js, db_url):
    port = free_port()
    settings = Settings(
        nats_url=js._nc.connected_url.geturl(),
        service_token="s3cret",
        admin_token="adm1n",
        http_listen=f"127.0.0.1:{port}",
        database_url=db_url,
        scan_interval_s=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(settings, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=10) as http:

            async def ready():
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await await_for(ready, what="queue ready")
            assert (await http.get("/queue", headers={"X-Mailflow-Admin-Token": "wrong"})).status_code == 401
            ref = await JetStreamBodies(js).put("QA", b"Subject: x\r\n\r\nx\r\n")
            msg = QueuedMessage(
                queue_id="QA",
                trace_id="tr",
                mail_from="a@daum.test",
                rcpt_to=[Recipient(address="z@naver.test"), Recipient(address="y@naver.test")],
                body_ref=ref,
                size=17,
            )
            await js.publish(subjects.MAIL_QUEUED, QueuedMessages(messages=[msg]).to_bytes(), headers={"Nats-Msg-Id": "QA"})

            async def listed():
                page = (await http.get("/queue")).json()
                return page["total"] == 1 and page

            page = await await_for(listed, what="message listed")
            assert page["items"][0]["queue_id"] == "QA"
            assert {r["state"] for r in page["items"][0]["recipients"]} == {"inflight"}
            for rcpt in ("z@naver.test", "y@naver.test"):
                r = DeliveryResult(queue_id="QA", rcpt=rcpt, attempt=1, outcome="deferred", status="4.4.1", diagnostic="refused")
                await js.publish(subjects.DELIVERY_RESULT, DeliveryResults(results=[r]).to_bytes())

            async def deferred():
                return (await http.get("/queue/counts")).json()["states"]["deferred"] == 2

            await await_for(deferred, what="deferred")
            assert (await http.get("/queue", params={"state": "deferred"})).json()["total"] == 1
            assert (await http.get("/queue", params={"state": "bogus"})).status_code == 422
            assert (await http.get("/queue", params={"state": "deferred", "domain": "Naver.test"})).json()["total"] == 1
            assert (await http.get("/queue", params={"state": "deferred", "sender": "b@daum.test"})).json()["total"] == 0
            assert (await http.get("/queue", params={"recipient": "x" * 513})).status_code == 422
            assert (await http.get("/queue", params={"min_age": "-1"})).status_code == 422
            shown = (await http.get("/queue/QA")).json()
            assert shown["recipients"][0]["last_error"] == "refused" and shown["recipients"][0]["next_attempt_at"]
            assert (await http.get("/queue/NOPE")).status_code == 404
            assert (await http.get("/queue/QA/headers")).json() == {"fields": [["Subject", "x"]], "kept": True}
            assert (await http.get("/queue/NOPE/headers")).status_code == 404
            assert (await http.post("/queue/QA/hold")).json() == {"count": 2}
            assert (await http.post("/queue/flush")).json() == {"count": 0}  # held ones stay put
            assert (await http.post("/queue/QA/release")).json() == {"count": 2}

            async def retried():
                states = (await http.get("/queue/counts")).json()["states"]
                return states["inflight"] == 2

            await await_for(retried, what="released recipients sent again")
            assert {r["attempts"] for r in (await http.get("/queue/QA")).json()["recipients"]} == {2}
            await js.publish(
                subjects.trace("QA"),
                TraceEvent(queue_id="QA", trace_id="tr", step="delivery", service="delivery").to_bytes(),
            )
            trace = (await http.get("/trace/QA")).json()
            assert [t["step"] for t in trace] == ["queue", "delivery"]
            assert (await http.get("/trace/UNKNOWN")).json() == []
            assert (await http.delete("/queue/QA")).status_code == 204
            assert (await http.get("/queue/QA")).status_code == 404
            assert (await http.delete("/queue/QA")).status_code == 404
            metrics = (await http.get("/metrics")).text
            assert 'mailflow_queue_messages_total{result="recorded"}' in metrics
            assert "mailflow_queue_scheduler_active 1.0" in metrics  # alone on its database: it runs the scheduler
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
