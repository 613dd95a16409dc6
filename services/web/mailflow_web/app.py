"""Wiring: the console's pages on `listen`, its /healthz /readyz /metrics on `http_listen`, NATS (trace
events for the live pipeline, mailflow_web.pipeline).

Ready when the store and the queue answer their /healthz and NATS is connected; a NATS that does not
answer within natsconn's initial timeout stops the start (a process manager starts it again). The console keeps nothing of its own: every
page reads the services' REST APIs (mailflow_web.backend). On SIGTERM both servers stop (in-flight
requests get 5 s) and the HTTP client closes.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mailflow import natsconn
from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, service_app
from mailflow_web import pages_admin, pages_pipeline, pages_sieve, pages_user
from mailflow_web.backend import Backend, BackendError
from mailflow_web.console import HERE, Console, install_error_pages
from mailflow_web.pipeline import Pipeline
from mailflow_web.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings, backend: Backend, pipeline: Pipeline | None = None) -> FastAPI:
    app = FastAPI(title="mailflow web console", docs_url=None, redoc_url=None, openapi_url=None)
    console = Console(settings, backend)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages_user.router(console))
    app.include_router(pages_sieve.router(console))
    app.include_router(pages_admin.router(console))
    app.include_router(pages_pipeline.router(console, pipeline or pipeline_of(settings, backend)))
    install_error_pages(app)

    @app.middleware("http")
    async def headers(request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def pipeline_of(settings: Settings, backend: Backend) -> Pipeline:
    urls = {
        "smtp-ingress": settings.smtp_url, "queue": settings.queue_url, "resolver": settings.resolver_url,
        "delivery": settings.delivery_url, "mailbox-store": settings.store_url, "imap-pop3": settings.imap_url,
    }  # fmt: skip
    return Pipeline({k: v.rstrip("/") for k, v in urls.items()}, backend.queue)


def backend_of(settings: Settings) -> Backend:
    return Backend(
        settings.store_url,
        settings.queue_url,
        settings.admin_token.get_secret_value(),
        settings.service_token.get_secret_value(),
        settings.backend_timeout,
    )


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or Stopper().install()
    backend = backend_of(settings)

    async def answers(api) -> bool:
        try:
            await api.get("/healthz")
            return True
        except BackendError:
            return False

    pipeline = pipeline_of(settings, backend)
    nc = await natsconn.connect(settings.nats_url, "web", **settings.nats_login())
    await pipeline.subscribe(nc)
    checks = {
        "store": lambda: answers(backend.store),
        "queue": lambda: answers(backend.queue),
        "nats": lambda: asyncio.sleep(0, nc.is_connected),
    }
    health = service_app("web", checks)
    app = make_app(settings, backend, pipeline)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    pages = await HttpServer(
        app,
        settings.listen,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers: at most 16 KiB
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    ).start()
    http = await HttpServer(health, settings.http_listen).start()
    polling = asyncio.create_task(pipeline.run(stop), name="pipeline")
    log.info("web console on %s", settings.listen)
    try:
        await stop.wait()
    finally:
        await pages.stop()
        await http.stop()
        await asyncio.wait([polling], timeout=5)
        await natsconn.close(nc)
        await backend.close()
