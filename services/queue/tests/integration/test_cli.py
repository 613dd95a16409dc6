"""`mailflow queue ...` and `mailflow trace` against a running queue service (typer's runner, in a thread)."""

from __future__ import annotations

import asyncio
import json

import httpx

from mailflow.bodies import JetStreamBodies
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    DeliveryResult,
    DeliveryResults,
    QueuedMessage,
    QueuedMessages,
    Recipient,
)
from mailflow_queue import app
from mailflow_queue.settings import Settings
from tests.support import await_for, free_port, mailflow_cli


async def test_queue_commands(js, tmp_path):
    port = free_port()
    settings = Settings(
        nats_url=js._nc.connected_url.geturl(),
        service_token="s",
        admin_token="adm1n",
        http_listen=f"127.0.0.1:{port}",
        database_url=f"sqlite:///{tmp_path / 'q.db'}",
        scan_interval_s=0.2,
    )
    env = {"MAILFLOW_QUEUE_URL": f"http://127.0.0.1:{port}", "MAILFLOW_ADMIN_TOKEN": "adm1n", "COLUMNS": "100"}
    run = mailflow_cli(env)

    stop = asyncio.Event()
    task = asyncio.create_task(app.run(settings, stop))
    try:
        async def ready():
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await await_for(ready, what="queue ready")
        ref = await JetStreamBodies(js).put("QCLI", b"Subject: x\r\n\r\nx\r\n")
        msg = QueuedMessage(queue_id="QCLI", trace_id="tr", mail_from="a@daum.test", rcpt_to=[Recipient(address="z@naver.test")], body_ref=ref, size=17)
        await js.publish(subjects.MAIL_QUEUED, QueuedMessages(messages=[msg]).to_bytes(), headers={"Nats-Msg-Id": "QCLI"})
        r = DeliveryResult(queue_id="QCLI", rcpt="z@naver.test", attempt=1, outcome="deferred", status="4.4.1", diagnostic="451 4.4.1 [127.0.0.3] refused")

        async def recorded():
            return "QCLI" in await run("queue", "list", "--json")

        await await_for(recorded, what="listed")
        await js.publish(subjects.DELIVERY_RESULT, DeliveryResults(results=[r]).to_bytes())

        async def deferred():
            return json.loads(await run("queue", "counts", "--json"))["states"]["deferred"] == 1

        await await_for(deferred, what="deferred")
        table = await run("queue", "list")
        assert "QCLI" in table and "[deferred]" in table and "[127.0.0.3] refused" in table
        assert "4.4.1" in await run("queue", "show", "QCLI")
        assert json.loads(await run("queue", "show", "QCLI", "--json"))["recipients"][0]["state"] == "deferred"
        assert "held: 1" in await run("queue", "hold", "QCLI")
        assert "flushed: 0" in await run("queue", "flush")
        assert "released: 1" in await run("queue", "release", "QCLI")
        assert "deferred" in await run("queue", "counts")
        assert "queue" in await run("trace", "QCLI")
        assert "no message NOPE" in await run("queue", "show", "NOPE", code=1)
        assert "nothing done" in await run("queue", "delete", "QCLI", code=1)  # no answer is a no
        assert "deleted" in await run("queue", "delete", "QCLI", "--yes")
        assert json.loads(await run("queue", "list", "--json"))["total"] == 0
        assert "401" in await mailflow_cli(dict(env, MAILFLOW_ADMIN_TOKEN="wrong"))("queue", "counts", code=1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
