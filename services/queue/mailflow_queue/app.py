"""Wiring: database (migrated at start), the streams, the intake and results workers, the scheduler, HTTP.

Startup fails loudly if the database cannot be migrated or NATS does not answer within its
timeout; a process manager restarts us. On SIGTERM: intake and results stop fetching and finish
the batch in hand, the scheduler finishes its pass and gives up the lease, HTTP stops, NATS drains,
the database closes. With PostgreSQL, any number of queue processes may share the database (and the
durable consumers): the holder of the scheduler lease runs the scheduler (lease.py). With SQLite, one.
"""

from __future__ import annotations

import asyncio
import logging

from mailflow import natsconn
from mailflow.bodies import JetStreamBodies
from mailflow.contracts.streams import Topology, ensure_streams
from mailflow.dns import DnsClient
from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, service_app
from mailflow_queue import admin, dead, ledger
from mailflow_queue.db import Database, make_engine, migrate
from mailflow_queue.lease import DbLease, SoleLease, holder_id
from mailflow_queue.outbox import JetStreamOutbox
from mailflow_queue.scheduler import Scheduler, TlsReporting
from mailflow_queue.settings import Settings
from mailflow_queue.workers import Commits, Intake, Results

log = logging.getLogger(__name__)


def policy_from(settings: Settings) -> ledger.Policy:
    return ledger.Policy(
        first_retry_s=settings.first_retry_s,
        max_retry_s=settings.max_retry_s,
        jitter=settings.retry_jitter,
        max_lifetime_s=settings.max_lifetime_s,
        delay_notice_s=settings.delay_notice_s,
        inflight_timeout_s=settings.inflight_timeout_s,
    )


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or Stopper().install()
    engine = make_engine(settings.database_url)
    await asyncio.to_thread(migrate, engine)
    database = Database(engine)
    nc = await natsconn.connect(settings.nats_url, "queue", **settings.nats_login())
    js = nc.jetstream()
    await ensure_streams(js, Topology(replicas=settings.stream_replicas, queue_lifetime_s=settings.max_lifetime_s))
    bodies = JetStreamBodies(js)
    outbox = JetStreamOutbox(js)
    policy = policy_from(settings)
    reporting = None
    if settings.tls_reports:
        sender = settings.tls_report_from or f"tlsrpt-noreply@{settings.hostname}"
        reporting = TlsReporting(DnsClient(nc), sender, settings.tls_report_organization or settings.hostname)
    if engine.dialect.name == "sqlite":
        lease: DbLease | SoleLease = SoleLease()
    else:
        lease = DbLease(engine, holder_id(), settings.scheduler_lease_s, settings.scheduler_renew_s)
    scheduler = Scheduler(
        database,
        outbox,
        bodies,
        policy,
        settings.hostname,
        interval=settings.scan_interval_s,
        retain_done_s=settings.retain_done_s,
        dsn_full_max=settings.dsn_full_max_bytes,
        tls_reports=reporting,
        lease=lease,
    )
    if isinstance(lease, DbLease):
        lease.on_acquired = scheduler.poke  # a new holder's first pass at once
    # envelope groups hold several envelopes each under load, a results message a delivery batch's results:
    # fetch fewer messages for about as many envelopes and results per transaction
    commits = Commits()  # a result that overtakes its message's intake commit waits for it
    intake = Intake(nc, js, database, outbox, policy, batch=max(1, settings.intake_batch // 8), commits=commits)
    results = Results(nc, js, database, policy, scheduler.poke, batch=max(1, settings.results_batch // 16), commits=commits)

    async def nats_ready() -> bool:
        return nc.is_connected

    app = service_app("queue", {"nats": nats_ready, "database": database.ping})
    app.include_router(admin.router(database, js, bodies, settings.admin_token.get_secret_value(), scheduler.poke))
    app.include_router(dead.router(js, settings.admin_token.get_secret_value()))
    http = await HttpServer(app, settings.http_listen).start()
    give_up = asyncio.Event()  # set after the scheduler's last pass: the lease outlives it
    leasing = asyncio.create_task(lease.run(give_up), name="lease")
    tasks = [
        asyncio.create_task(intake.run(stop), name="intake"),
        asyncio.create_task(results.run(stop), name="results"),
        asyncio.create_task(scheduler.run(stop), name="scheduler"),
    ]
    log.info("queue ready", extra={"http": http.port, "database": engine.url.render_as_string(hide_password=True)})
    try:
        done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t in tasks and t.exception():
                log.error("%s stopped: %s", t.get_name(), t.exception())
        stop.set()
        await asyncio.wait(tasks, timeout=30)
    finally:
        give_up.set()
        await asyncio.wait([leasing], timeout=10)
        await http.stop()
        await natsconn.close(nc)
        await asyncio.to_thread(database.close)
