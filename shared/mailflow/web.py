"""The HTTP side of every service: /healthz, /readyz, /metrics, and the service's own REST routes.

Convention: `/healthz` answers 200 while the process runs its event loop (liveness), with the service's
name, the installed version (what `mailflow status` shows) and the instance (MAILFLOW_INSTANCE, else the
host name: a replica, a pod); `/readyz`
answers 200 only when every readiness check passes and 503 with the failing names otherwise
(readiness: NATS connected, database reachable...). `/metrics` is Prometheus text. Checks are
small async callables returning True/False; one that raises counts as not ready.
The server runs inside the service's own event loop (uvicorn, without its signal handling).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailflow.distribution import version
from mailflow.hostport import split_hostport

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]


def health_router(service: str, checks: dict[str, Check] | None = None) -> APIRouter:
    checks = checks if checks is not None else {}
    router = APIRouter(tags=["health"])
    running = version()
    instance = os.environ.get("MAILFLOW_INSTANCE") or socket.gethostname()

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"service": service, "status": "ok", "version": running, "instance": instance}

    @router.get("/readyz")
    async def readyz() -> Response:
        failing = []
        for name, check in list(checks.items()):
            try:
                ok = await asyncio.wait_for(check(), timeout=2.0)
            except Exception:
                ok = False
            if not ok:
                failing.append(name)
        status = 503 if failing else 200
        body = {"service": service, "ready": not failing, "failing": failing, "instance": instance, "version": running}
        return JSONResponse(body, status_code=status)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def service_app(service: str, checks: dict[str, Check] | None = None, **fastapi_kw) -> FastAPI:
    """A FastAPI app with the health routes; REST services add their own routers to it."""
    app = FastAPI(title=f"mailflow {service}", **fastapi_kw)
    app.include_router(health_router(service, checks))
    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the service owns SIGTERM (mailflow.lifecycle)
        yield


class HttpServer:
    """uvicorn running in the current loop. `await start()`, read `.port`, `await stop()`."""

    def __init__(self, app, listen: str, **uvicorn_kw):
        host, port = split_hostport(listen)
        kw = dict(log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        kw.update(uvicorn_kw)
        self.server = _Server(uvicorn.Config(app, host=host, port=port, **kw))
        self.task: asyncio.Task | None = None

    async def start(self) -> HttpServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the startup error (port in use...)
                raise RuntimeError("HTTP server exited during startup")
            await asyncio.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, timeout=10)


def require_token(header: str, secret: str):
    """A FastAPI dependency that answers 401 unless the request carries `header: secret`."""
    expected = secret.encode()

    async def check(request: Request) -> None:
        given = request.headers.get(header, "").encode()
        if not given or not hmac.compare_digest(given, expected):
            raise HTTPException(status_code=401, detail=f"missing or wrong {header}")

    return check
