"""Fixtures for mailbox-store tests: settings on a fresh database (SQLite, and PostgreSQL when
MAILFLOW_TEST_POSTGRES_URL is set, via the root `db_url` fixture), the store opened directly, and the
real service (HTTP on port 0, in the test's loop) with a StoreClient talking to it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from mailflow.store.client import StoreClient
from mailflow_mailbox_store import app
from mailflow_mailbox_store.events import MemoryPublisher
from mailflow_mailbox_store.settings import Settings

SERVICE_TOKEN = "service-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"


def make_settings(tmp_path, db_url: str, **kw) -> Settings:
    values = dict(
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        database_url=db_url,
        blob_dir=str(tmp_path / "blobs"),
        http_listen="127.0.0.1:0",
        nats_url="nats://127.0.0.1:1",
        argon2_time_cost=1,  # tests need speed, not strength; production keeps the RFC 9106 defaults
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        maintenance_interval=3600,
    )
    values.update(kw)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path, db_url) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
async def store(settings):
    """The store opened directly (no HTTP); events collected in store.publisher."""
    s = await app.open_store(settings, MemoryPublisher())
    yield s
    await app.close_store(s)


class Running:
    def __init__(self, url: str, publisher: MemoryPublisher, store_holder: dict):
        self.url = url
        self.publisher = publisher
        self._holder = store_holder

    @property
    def store(self):
        return self._holder["store"]


@pytest.fixture
async def service(settings):
    """The real service: HTTP on a free port in this loop; `.url`, `.publisher`, `.store`."""
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


@pytest.fixture
async def client(service):
    c = StoreClient(service.url, SERVICE_TOKEN)
    yield c
    await c.close()


@pytest.fixture
async def admin(service):
    import httpx
    from mailflow.contracts.rest import ADMIN_TOKEN_HEADER

    async with httpx.AsyncClient(
        base_url=service.url, headers={ADMIN_TOKEN_HEADER: ADMIN_TOKEN}, timeout=30
    ) as c:
        yield c
