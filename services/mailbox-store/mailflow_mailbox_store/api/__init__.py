"""The REST API: FastAPI app with the admin, delivery/directory and access groups (OpenAPI at /docs).

Errors become HTTP answers here and only here, as {"detail": ...}:
  NotFound 404, Conflict 409, Invalid 422, QuotaExceeded 507 (+ "permanent"), missing or bad token 401
  (a bad session token says {"detail": "session", ...}), ServiceUnavailable 503 (InsufficientStorage, a
  full disk: 503 with "storage": "full"), anything else 500 with a
  ref (the traceback goes to the log under the same ref, never to the client).
"""

from __future__ import annotations

import logging
import time

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mailflow import ids
from mailflow.errors import (
    Conflict,
    InsufficientStorage,
    Invalid,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
)
from mailflow.web import Check, service_app
from mailflow_mailbox_store import metrics
from mailflow_mailbox_store.api import access, admin, delivery, sieve
from mailflow_mailbox_store.service import SERVICE

log = logging.getLogger(__name__)


def json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(status: int, detail: str, **extra) -> Response:
    return json({"detail": detail, **extra}, status)


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_r: Request, exc: NotFound) -> Response:
        return _error(404, str(exc) or "not found")

    @app.exception_handler(Conflict)
    async def conflict(_r: Request, exc: Conflict) -> Response:
        return _error(409, str(exc) or "conflict")

    @app.exception_handler(Invalid)
    async def invalid(_r: Request, exc: Invalid) -> Response:
        return _error(422, str(exc) or "invalid")

    @app.exception_handler(QuotaExceeded)
    async def quota(_r: Request, exc: QuotaExceeded) -> Response:
        return _error(507, str(exc), permanent=exc.permanent)

    @app.exception_handler(InsufficientStorage)
    async def full(_r: Request, exc: InsufficientStorage) -> Response:
        log.warning("storage full: %s", exc)
        return _error(503, "storage full", storage="full")

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_r: Request, exc: ServiceUnavailable) -> Response:
        log.warning("unavailable: %s", exc)
        return _error(503, "storage temporarily unavailable")

    @app.exception_handler(Exception)
    async def internal(_r: Request, exc: Exception) -> Response:
        ref = ids.ref()
        log.error("internal error", exc_info=exc, extra={"ref": ref})
        return _error(500, f"internal error, ref {ref}")


class Timing:
    """Pure ASGI middleware: request duration by route name and result class."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "name", None) or "other"
            s = status[0]
            result = (
                "ok" if s < 400 else "unavailable" if s == 503 else "client_error" if s < 500 else "error"
            )
            metrics.REQUEST_SECONDS.labels(name, result).observe(time.perf_counter() - started)


def build_app(
    store, admin_token: str, service_token: str, checks: dict[str, Check], max_items: int = 1000
) -> FastAPI:
    app = service_app(SERVICE, checks, description="Users, mailboxes and messages of Mailflow.")
    install_errors(app)
    app.include_router(admin.router(store, admin_token))
    app.include_router(delivery.router(store, service_token, max_items))
    app.include_router(access.router(store, service_token, max_items))
    app.include_router(sieve.router(store, service_token))
    app.add_middleware(Timing)
    return app
