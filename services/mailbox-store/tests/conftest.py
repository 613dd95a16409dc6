"""Fixtures for mailbox-store tests.

`service` is the real service (HTTP on a free port, in the test module's event loop) on a fresh
database per test module: SQLite, and PostgreSQL when MAILFLOW_TEST_POSTGRES_URL is set (a schema of its
own), there once with bodies in segment files and once with bodies in the database (blobs=postgres). Tests share it and stay apart by working in a domain of their own (`domain` fixture), which is
how the store keeps users apart anyway. `client` is a StoreClient and `admin` an admin HTTP client for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os

import httpx
import pytest
import pytest_asyncio

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.store.client import StoreClient
from mailflow_mailbox_store import app
from mailflow_mailbox_store.settings import Settings
from tests.support import postgres_schema
from tests.support.store import MemoryPublisher

SERVICE_TOKEN = "service-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
_domains = itertools.count(1)


def make_settings(tmp_path, db_url: str, blobs: str = "segments", **kw) -> Settings:
    values = dict(
        blobs=blobs,
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        session_key="session-key-for-tests",
        database_url=db_url,
        blob_dir=str(tmp_path / "blobs"),
        http_listen="127.0.0.1:0",
        nats_url="nats://127.0.0.1:1",
        argon2_time_cost=1,  # tests need speed, not strength; production keeps the RFC 9106 defaults
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        maintenance_interval=3600,
        listing_cache_min_messages=1,  # every SELECT goes through the listing cache and its refresh
    )
    values.update(kw)
    return Settings(**values)


def pytest_collection_modifyitems(items):
    """Async tests of this service run in their module's loop, where the shared service runs."""
    here = os.path.dirname(__file__)
    for item in items:
        fn = getattr(item, "function", None)
        if str(item.path).startswith(here) and fn is not None and inspect.iscoroutinefunction(fn):
            item.add_marker(pytest.mark.asyncio(loop_scope="module"), append=False)


@pytest.fixture(scope="module", params=["sqlite", "postgres", "postgres-bodies"])
def module_db(request, tmp_path_factory) -> tuple[str, str]:
    """(database URL, blobs setting) of the module's store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'store.db'}", "segments"
        return
    base = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
    with postgres_schema(base) as url:
        yield url, ("postgres" if request.param == "postgres-bodies" else "segments")


class Running:
    def __init__(self, url: str, publisher: MemoryPublisher, holder: dict):
        self.url = url
        self.publisher = publisher
        self._holder = holder

    @property
    def store(self):
        return self._holder["store"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(module_db, tmp_path_factory):
    """The real service: `.url`, `.publisher` (what it would publish), `.store` (the store inside)."""
    settings = make_settings(tmp_path_factory.mktemp("store"), *module_db)
    stop, ready = asyncio.Event(), asyncio.Event()
    publisher = MemoryPublisher()
    holder: dict = {}
    task = asyncio.create_task(app.run(settings, stop, ready, publisher=publisher, holder=holder))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready.is_set(), "store did not start"
    yield Running(f"http://127.0.0.1:{ready.port}", publisher, holder)
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(service):
    c = StoreClient(service.url, SERVICE_TOKEN)
    yield c
    await c.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(service):
    async with httpx.AsyncClient(
        base_url=service.url, headers={ADMIN_TOKEN_HEADER: ADMIN_TOKEN}, timeout=30
    ) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def domain(admin, service):
    """A domain of this test's own; what the service published so far is forgotten."""
    name = f"d{next(_domains)}.test"
    r = await admin.post("/admin/domains", json={"name": name})
    assert r.status_code == 201, r.text
    service.publisher.events.clear()
    service.publisher.traces.clear()
    service.publisher.revocations.clear()
    return name
