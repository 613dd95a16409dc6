"""Wiring: NATS request handlers on `dns.mx` and `dns.query` (queue group "resolver") and the HTTP side.

A request that does not parse gets a temp_fail reply naming the problem (the asker retries or logs);
a lookup that raises unexpectedly is logged with a ref and answered temp_fail. Several resolver
processes share the subjects through the queue group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Depends
from pydantic import ValidationError

from mailflow import ids, natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import Contract, DnsAnswer, DnsQuery, DnsType, MxReply, MxRequest
from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, require_token, service_app
from mailflow_resolver import metrics
from mailflow_resolver.lookup import MxResolver, QueryResolver, make_dns_resolver
from mailflow_resolver.settings import Settings

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Contract)
Rep = TypeVar("Rep", bound=Contract)


def build_resolvers(settings: Settings) -> tuple[MxResolver, QueryResolver]:
    dns = make_dns_resolver(settings.nameservers, settings.timeout, settings.lifetime, settings.dnssec_trust_ad)
    mx = MxResolver(dns, settings.cache_size, settings.max_ttl, settings.negative_ttl, settings.ipv6)
    queries = QueryResolver(
        dns,
        cache_chars=settings.query_cache_chars,
        max_ttl=settings.max_ttl,
        negative_ttl=settings.negative_ttl,
        max_answer_records=settings.max_answer_records,
        max_answer_chars=settings.max_answer_chars,
    )
    return mx, queries


async def answer(
    subject: str,
    data: bytes,
    request: type[Req],
    call: Callable[[Req], Awaitable[Rep]],
    failed: Callable[[Req | None, str], Rep],
) -> Rep:
    """One request's reply: `call`'s, or `failed(request or None, why)` as a temp_fail."""
    try:
        req = request.from_bytes(data)
    except ValidationError as exc:
        metrics.REQUESTS.labels(subject, "bad_request").inc()
        return failed(None, f"bad request: {exc.error_count()} errors")
    try:
        reply = await call(req)
        metrics.REQUESTS.labels(subject, "answered").inc()
        return reply
    except Exception:
        ref = ids.ref()
        log.exception("lookup failed", extra={"ref": ref, "request": req.model_dump_json()[:300]})
        metrics.REQUESTS.labels(subject, "error").inc()
        return failed(req, f"internal error, ref {ref}")


def mx_failed(req: MxRequest | None, error: str) -> MxReply:
    return MxReply(domain=req.domain if req else "", status="temp_fail", error=error)


def query_failed(req: DnsQuery | None, error: str) -> DnsAnswer:
    return DnsAnswer(name=req.name if req else "", type=req.type if req else "A", status="temp_fail", error=error)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or Stopper().install()
    mx, queries = build_resolvers(settings)
    nc = await natsconn.connect(settings.nats_url, "resolver", **settings.nats_login())

    async def on_mx(msg) -> None:
        reply = await answer(subjects.MX_LOOKUP, msg.data, MxRequest, lambda r: mx.lookup(r.domain), mx_failed)
        if msg.reply:
            await msg.respond(reply.to_bytes())

    async def on_query(msg) -> None:
        reply = await answer(subjects.DNS_QUERY, msg.data, DnsQuery, lambda q: queries.query(q.name, q.type), query_failed)
        if msg.reply:
            await msg.respond(reply.to_bytes())

    subs = [
        await nc.subscribe(subjects.MX_LOOKUP, queue="resolver", cb=on_mx, pending_msgs_limit=100_000),
        await nc.subscribe(subjects.DNS_QUERY, queue="resolver", cb=on_query, pending_msgs_limit=100_000),
    ]

    async def nats_ready() -> bool:
        return nc.is_connected

    app = service_app("resolver", {"nats": nats_ready})
    guard = require_token(SERVICE_TOKEN_HEADER, settings.service_token.get_secret_value())

    @app.get("/mx/{domain}", dependencies=[Depends(guard)])
    async def mx_route(domain: str) -> MxReply:
        """For debugging: what the resolver answers delivery about `domain`."""
        return await mx.lookup(domain)

    @app.get("/query/{rdtype}/{name:path}", dependencies=[Depends(guard)])  # a name may hold a "/"
    async def query_route(rdtype: DnsType, name: str) -> DnsAnswer:
        """What the resolver answers `dns.query` about `name` and `rdtype` (TXT, A, AAAA, MX, PTR, SRV, TLSA); for
        debugging and for `mailflow dns records --check`."""
        return await queries.query(name, rdtype)

    http = await HttpServer(app, settings.http_listen).start()
    log.info("resolver ready", extra={"http": http.port, "nameservers": settings.nameservers or "system", "dnssec_trust_ad": settings.dnssec_trust_ad})
    await stop.wait()
    for sub in subs:
        await sub.drain()
    await http.stop()
    await natsconn.close(nc)
