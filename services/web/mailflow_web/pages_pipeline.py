"""The pipeline page and its server-sent events: a snapshot (mailflow_web.pipeline) every second.

GET /admin/pipeline/events is text/event-stream for an admin session: the first event carries the last
hour's history (again every HISTORY_EVERY events), each one the figures now. A stream ends when the browser goes, after MAX_STREAM_S
(EventSource reconnects by itself), or when the console stops; at most MAX_STREAMS at once (503 past it).
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from mailflow_web import metrics
from mailflow_web.auth import ADMIN
from mailflow_web.console import Console
from mailflow_web.pipeline import Pipeline

MAX_STREAMS = 50
MAX_STREAM_S = 600
TICK_S = 1.0
HISTORY_EVERY = 5  # events; the chart's points are minutes


def router(c: Console, pipeline: Pipeline) -> APIRouter:
    r = APIRouter(prefix="/admin")
    streams = [0]

    @r.get("/pipeline")
    async def page(request: Request):
        login = await c.require(request, ADMIN)
        await pipeline.watch()
        if not pipeline.fresh():  # nobody watched lately: the figures are old, ask for them now
            await pipeline.poll()
        return c.page(request, "admin_pipeline.html", login, snap=pipeline.snapshot())

    @r.get("/pipeline/events")
    async def events(request: Request):
        await c.require(request, ADMIN)
        await pipeline.watch()
        if streams[0] >= MAX_STREAMS:
            raise HTTPException(503, "too many live views open")

        async def gen():
            streams[0] += 1
            metrics.LIVE_VIEWS.inc()
            try:
                for tick in range(int(MAX_STREAM_S / TICK_S)):
                    if await request.is_disconnected():
                        return
                    yield f"data: {json.dumps(pipeline.snapshot(history=tick % HISTORY_EVERY == 0))}\n\n"
                    await asyncio.sleep(TICK_S)
            finally:
                streams[0] -= 1
                metrics.LIVE_VIEWS.dec()

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return r
