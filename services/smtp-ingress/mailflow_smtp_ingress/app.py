"""Wiring: NATS and JetStream, the store's Directory (cached), the sender authentication checks (DNS
through the resolver service), the SMTP listeners, the HTTP side.

Startup fails loudly (NATS unreachable after its retry window, a listener port in use, an
unreadable certificate). SIGTERM: readiness turns false, listeners close, open transactions get
`drain_timeout` to finish (SmtpServer.drain), then the HTTP server stops and NATS is drained, so
every PubAck in flight is awaited and no accepted message is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mailflow import mtasts, natsconn, tls
from mailflow.bodies import JetStreamBodies
from mailflow.contracts import streams
from mailflow.dns import DnsClient
from mailflow.hostport import LOCAL_HOST, split_hostport
from mailflow.lifecycle import Stopper
from mailflow.store.api import Directory
from mailflow.web import HttpServer, service_app
from mailflow_smtp_ingress import autoconfig, metrics
from mailflow_smtp_ingress.checks import Checks
from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.mtasts import LocalDomains, policy_app
from mailflow_smtp_ingress.queueing import JetStreamQueue
from mailflow_smtp_ingress.rspamd import SpamFilter
from mailflow_smtp_ingress.server import SmtpServer
from mailflow_smtp_ingress.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """What `run` reports through `started` once it is up: the listeners and the HTTP port."""

    smtp: SmtpServer
    http_port: int
    https_port: int | None = None  # the HTTPS listener (MTA-STS policy, autoconfiguration), when on


def certificates(settings: Settings) -> tls.Certificates:
    """MAILFLOW_TLS_CERT/KEY, reloaded when they change; without them (local runs) a self-signed pair
    under the data dir."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert or not key:
        base = Path(os.environ.get("MAILFLOW_DATA_DIR", "./data")) / "tls"
        cert, key = str(base / "cert.pem"), str(base / "key.pem")
        if tls.ensure_self_signed(Path(cert), Path(key), settings.hostname):
            log.warning("no TLS certificate configured: made a self-signed one", extra={"cert": cert})
    return tls.Certificates(cert, key, expiry=metrics.TLS_CERT_EXPIRY)


async def https_server(settings: Settings, directory: Directory, certs: tls.Certificates) -> HttpServer | None:
    """The HTTPS listener on the MX listener's address, when MAILFLOW_SMTP_HTTPS_PORT is set: our MTA-STS
    policy (mtasts.py) and mail clients' autoconfiguration (autoconfig.py), one cached "is this domain
    ours?" for both."""
    if not settings.https_port:
        return None
    host = split_hostport(settings.listen)[0] if settings.listen else LOCAL_HOST
    listen = f"[{host}]:{settings.https_port}" if ":" in host else f"{host}:{settings.https_port}"
    policy = mtasts.published(settings.mta_sts_mode, settings.mta_sts_mx, settings.mta_sts_max_age, settings.hostname)
    local = LocalDomains(directory.is_local_domain)
    app = policy_app(policy, local)
    app.include_router(autoconfig.router(autoconfig.ClientConfig(settings.hostname), local))
    # the mail listeners' certificate, and its reloads (Certificates.context picks the newest pair)
    server = await HttpServer(app, listen, ssl_context_factory=lambda _config, _default: certs.context).start()
    log.info("HTTPS served: MTA-STS policy, autoconfiguration", extra={"port": server.port, "mode": policy.mode, "id": policy.id()})
    return server


def store_directory(settings: Settings) -> Directory:
    from mailflow.store.client import StoreClient

    return StoreClient(
        settings.store_url, settings.service_token.get_secret_value(), timeout=settings.directory_timeout
    )


async def run(
    settings: Settings,
    stop: asyncio.Event | None = None,
    directory: Directory | None = None,
    started: asyncio.Future | None = None,
) -> None:
    """Run until `stop` is set (SIGTERM/SIGINT by default). `directory` replaces the store client
    (tests); `started` receives a `Running` once every listener is up."""
    stop = stop or Stopper().install()
    certs = certificates(settings)
    nc = await natsconn.connect(settings.nats_url, "smtp-ingress", reconnect_buffer=False, **settings.nats_login())
    js = nc.jetstream(timeout=settings.publish_timeout)
    await streams.wait_for(js, ("BODY", "MAIL"))  # the queue creates them
    inner = directory or store_directory(settings)
    cached = CachedDirectory(
        inner,
        ttl=settings.directory_cache_ttl,
        negative_ttl=settings.directory_negative_ttl,
        size=settings.directory_cache_size,
        timeout=settings.directory_timeout,
    )
    queue = JetStreamQueue(
        nc,
        js,
        JetStreamBodies(js, timeout=settings.publish_timeout),
        settings.publish_timeout,
        inline_max=settings.inline_max_bytes,
    )
    # sender authentication on the MX listener; DNS through the resolver service (its cache is shared)
    checks = Checks.over(settings, DnsClient(nc, timeout=settings.dns_timeout))
    spam = SpamFilter(settings) if settings.rspamd_url else None  # rspamd, when a URL is set
    handler = IngressHandler(settings, cached, queue, checks=checks, spam=spam)
    server = await SmtpServer(settings, handler, certs.context).start()
    reload = asyncio.create_task(certs.watch(settings.tls_reload_s)) if settings.tls_reload_s else None

    async def nats_ready() -> bool:
        return nc.is_connected

    async def accepting() -> bool:
        return not server.draining

    http = await HttpServer(
        service_app("smtp-ingress", {"nats": nats_ready, "listeners": accepting}), settings.http_listen
    ).start()
    web = await https_server(settings, inner, certs)
    log.info("smtp-ingress ready", extra={"http": http.port})
    if started is not None and not started.done():
        started.set_result(Running(server, http.port, web.port if web else None))
    try:
        await stop.wait()
    finally:
        if reload is not None:
            reload.cancel()
        await server.drain()
        await queue.close()
        if spam is not None:
            await spam.close()
        await http.stop()
        if web is not None:
            await web.stop()
        close = getattr(inner, "close", None)
        if close is not None:
            try:
                await close()
            except Exception as exc:
                log.warning("directory close: %s", exc)
        await natsconn.close(nc)
        log.info("smtp-ingress stopped")
