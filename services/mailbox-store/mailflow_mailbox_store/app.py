"""Wiring: blob store, database (migrated at startup), publisher, the store, the HTTP server, maintenance.

Startup fails (and the process exits non-zero) if the database cannot be migrated or the blob directory
cannot be written (blobs=segments). NATS is optional at runtime: the store serves without it and publishes once connected.
SIGTERM: stop accepting HTTP, let requests in flight finish, let the writer commit what is queued, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import logging

from mailflow.lifecycle import Stopper
from mailflow.rspamd import RspamdClient
from mailflow.web import HttpServer
from mailflow_mailbox_store import maintenance
from mailflow_mailbox_store.access import Store
from mailflow_mailbox_store.api import build_app
from mailflow_mailbox_store.blobs import SegmentBlobs
from mailflow_mailbox_store.db import Database
from mailflow_mailbox_store.events import NatsPublisher, Publisher
from mailflow_mailbox_store.learning import Learner
from mailflow_mailbox_store.passwords import Passwords
from mailflow_mailbox_store.sessions import Sessions, derive_key
from mailflow_mailbox_store.settings import Settings

log = logging.getLogger(__name__)


async def open_store(settings: Settings, publisher: Publisher) -> Store:
    """Everything but HTTP: what tests use to drive the store directly. Call `close_store` after."""
    segments = SegmentBlobs(settings.blob_dir, settings.segment_bytes) if settings.blobs == "segments" else None
    db = Database(settings.database_url, segments, settings.db_readers, settings.write_batch_max)
    await asyncio.to_thread(db.migrate)
    db.start()
    key = derive_key(settings.session_key.get_secret_value())
    store = Store(
        db,
        db.blobs,
        publisher,
        Passwords(
            settings.argon2_time_cost,
            settings.argon2_memory_kib,
            settings.argon2_parallelism,
            settings.login_cache_ttl,
            scram_iterations=settings.scram_iterations,
            scram_secret=hmac.new(key, b"mailflow scram fake salts", hashlib.sha256).digest(),
        ),
        Sessions(key, settings.session_ttl),
        default_quota=settings.default_quota_bytes,
        recipient_delimiter=settings.recipient_delimiter,
        max_message_bytes=settings.max_message_bytes,
        pop3_lock_ttl=settings.pop3_lock_ttl,
        session_check_interval=settings.session_check_interval,
        listing_cache_bytes=settings.listing_cache_bytes,
        sieve_max_script_bytes=settings.sieve_max_script_bytes,
        sieve_max_scripts=settings.sieve_max_scripts,
        listing_cache_min_messages=settings.listing_cache_min_messages,
    )
    if settings.rspamd_url:
        controller = RspamdClient(
            settings.rspamd_url, settings.rspamd_timeout, settings.rspamd_password.get_secret_value(), max_connections=4
        )
        store.learner = Learner(
            controller, store.read_bodies, settings.rspamd_learn_queue, settings.rspamd_learn_max_bytes
        )
    return store


async def close_store(store: Store) -> None:
    await store.close()
    await asyncio.to_thread(store.db.close)
    store.blobs.close()


async def run(
    settings: Settings,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    publisher: Publisher | None = None,
    holder: dict | None = None,
) -> None:
    """Serve until `stop`. Tests pass `ready` (gets .port), their own publisher, and a dict for the store."""
    stop = stop or Stopper().install()
    nats = None
    if publisher is None:
        publisher = nats = NatsPublisher(settings.nats_url, login=settings.nats_login())
        nats.start()
    store = await open_store(settings, publisher)
    if holder is not None:
        holder["store"] = store

    async def database_ready() -> bool:
        return await store.db.read(lambda tx: tx.value("SELECT 1")) == 1

    app = build_app(
        store,
        settings.admin_token.get_secret_value(),
        settings.service_token.get_secret_value(),
        {"database": database_ready},
        max_items=settings.max_batch_items,
    )
    # Keep-alive longer than StoreClient keeps idle connections (30 s), so it never reuses a closed one.
    http = await HttpServer(app, settings.http_listen, timeout_keep_alive=75, backlog=4096).start()
    chores = asyncio.create_task(
        maintenance.loop(
            store, settings.maintenance_interval, settings.delivery_key_days, settings.expunged_keep, stop
        )
    )
    # Everything made so far lives as long as the process: keep the cyclic GC from walking it again
    # and again while a 100k-row listing allocates its tuples.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 20, 20)  # young collections per 100k new objects, not per 700
    log.info(
        "mailbox-store ready", extra={"http": http.port, "database": store.db.engine.url.render_as_string()}
    )
    if ready is not None:
        ready.port = http.port  # type: ignore[attr-defined]
        ready.set()
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await http.stop()
    chores.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await chores
    await close_store(store)
    if nats is not None:
        await nats.close()
    log.info("mailbox-store stopped")
