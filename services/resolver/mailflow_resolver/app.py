"""Wiring: NATS request handler on `dns.mx` (queue group "resolver") and the HTTP side.

A request that does not parse gets a temp_fail reply naming the problem (the asker retries or logs);
a lookup that raises unexpectedly is logged with a ref and answered temp_fail. Several resolver
processes share the subject through the queue group.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Depends
from pydantic import ValidationError

from mailflow import ids, natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import MxReply, MxRequest
from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, require_token, service_app
from mailflow_resolver import metrics
from mailflow_resolver.lookup import MxResolver, make_dns_resolver
from mailflow_resolver.settings import Settings

log = logging.getLogger(__name__)


def build_resolver(settings: Settings) -> MxResolver:
    return MxResolver(
        make_dns_resolver(settings.nameservers, settings.timeout, settings.lifetime),
        cache_size=settings.cache_size,
        max_ttl=settings.max_ttl,
        negative_ttl=settings.negative_ttl,
        ipv6=settings.ipv6,
    )


async def answer(resolver: MxResolver, data: bytes) -> MxReply:
    try:
        req = MxRequest.from_bytes(data)
    except ValidationError as exc:
        metrics.REQUESTS.labels("bad_request").inc()
        return MxReply(domain="", status="temp_fail", error=f"bad request: {exc.error_count()} errors")
    try:
        reply = await resolver.lookup(req.domain)
        metrics.REQUESTS.labels("answered").inc()
        return reply
    except Exception:
        ref = ids.ref()
        log.exception("lookup failed", extra={"ref": ref, "domain": req.domain})
        metrics.REQUESTS.labels("error").inc()
        return MxReply(domain=req.domain, status="temp_fail", error=f"internal error, ref {ref}")


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or Stopper().install()
    resolver = build_resolver(settings)
    nc = await natsconn.connect(settings.nats_url, "resolver", **settings.nats_login())

    async def on_request(msg) -> None:
        reply = await answer(resolver, msg.data)
        if msg.reply:
            await msg.respond(reply.to_bytes())

    sub = await nc.subscribe(subjects.MX_LOOKUP, queue="resolver", cb=on_request, pending_msgs_limit=100_000)

    async def nats_ready() -> bool:
        return nc.is_connected

    app = service_app("resolver", {"nats": nats_ready})
    guard = require_token(SERVICE_TOKEN_HEADER, settings.service_token.get_secret_value())

    @app.get("/mx/{domain}", dependencies=[Depends(guard)])
    async def mx(domain: str) -> MxReply:
        """For debugging: what the resolver answers delivery about `domain`."""
        return await resolver.lookup(domain)

    http = await HttpServer(app, settings.http_listen).start()
    log.info("resolver ready", extra={"http": http.port, "nameservers": settings.nameservers or "system"})
    await stop.wait()
    await sub.drain()
    await http.stop()
    await natsconn.close(nc)
