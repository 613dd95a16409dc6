"""Wiring: the console's pages on `listen`, its /healthz /readyz /metrics on `http_listen`.

Ready when the store and the queue answer their /healthz. The console keeps nothing of its own: every
page reads the services' REST APIs (mailflow_web.backend). On SIGTERM both servers stop (in-flight
requests get 5 s) and the HTTP client closes.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, service_app
from mailflow_web import pages_admin, pages_user
from mailflow_web.backend import Backend, BackendError
from mailflow_web.console import HERE, Console, install_error_pages
from mailflow_web.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings, backend: Backend) -> FastAPI:
    app = FastAPI(title="mailflow web console", docs_url=None, redoc_url=None, openapi_url=None)
    console = Console(settings, backend)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages_user.router(console))
    app.include_router(pages_admin.router(console))
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

    health = service_app("web", {"store": lambda: answers(backend.store), "queue": lambda: answers(backend.queue)})
    pages = await HttpServer(make_app(settings, backend), settings.listen, h11_max_incomplete_event_size=16 * 1024).start()
    http = await HttpServer(health, settings.http_listen).start()
    log.info("web console on %s", settings.listen)
    try:
        await stop.wait()
    finally:
        await pages.stop()
        await http.stop()
        await backend.close()
