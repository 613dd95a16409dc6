"""Wiring: NATS, the streams, the sent log, the store client, the resolver client, N pull lanes, HTTP.

Startup fails loudly if NATS does not answer; the mailbox store may come later (its calls defer
until it answers). On SIGTERM the lanes stop fetching, finish and acknowledge the batch in hand,
then HTTP stops and NATS drains. Many delivery processes may share the JOBS consumer.
"""

from __future__ import annotations

import asyncio
import logging

from mailflow import natsconn, tls
from mailflow.bodies import JetStreamBodies
from mailflow.contracts import streams
from mailflow.dns import DnsClient, MxClient
from mailflow.lifecycle import Stopper
from mailflow.web import HttpServer, service_app
from mailflow_delivery import nexthop, smtp_out
from mailflow_delivery.dane import Dane
from mailflow_delivery.dkim import Signer
from mailflow_delivery.forwarding import Forwarder
from mailflow_delivery.mtasts import KvPolicyStore, Policies, verifying_context
from mailflow_delivery.routing import Deliveries, RemoteConfig
from mailflow_delivery.sentlog import KvSentLog
from mailflow_delivery.settings import Settings
from mailflow_delivery.sieve import JetStreamMailer, SieveFilter
from mailflow_delivery.worker import DeliveryWorker

log = logging.getLogger(__name__)


def relay(s: Settings) -> nexthop.NextHop | None:
    """The smarthost as a next hop: its TLS policy (verified by default) and login."""
    if not s.relay_host:
        return None
    host, _ = nexthop.parse_host(s.relay_host)
    mode = {"starttls": "require", "tls": "implicit", "none": "none"}[s.relay_tls]
    ctx = tls.client_context(verify=s.relay_tls_verify, cafile=s.relay_tls_ca_file or None) if mode != "none" else None
    auth = smtp_out.Credentials(s.relay_user, s.relay_password, s.relay_auth_in_clear) if s.relay_user else None
    policy = smtp_out.TlsPolicy(mode, ctx, s.relay_tls_name or host)
    return nexthop.NextHop("relay", host, s.relay_port, lookup_mx=False, tls=policy, auth=auth)


def remote_config(s: Settings) -> RemoteConfig:
    ctx = None
    if s.tls != "none":
        ctx = tls.client_context(verify=s.tls_verify, cafile=s.tls_ca_file or None)
    return RemoteConfig(
        port=s.remote_port,
        helo=s.helo_name or s.hostname,
        tls=smtp_out.TlsPolicy(s.tls, ctx),
        timeouts=smtp_out.Timeouts(s.connect_timeout, s.greeting_timeout, s.command_timeout, s.data_start_timeout, s.data_end_timeout),
        max_per_domain=s.max_connections_per_domain,
        source_address=s.source_address or None,
        router=nexthop.Router(nexthop.parse_routes(s.routes), relay(s)),
        sts_tls=smtp_out.TlsPolicy("require", verifying_context(s.tls_ca_file or None)),
    )


def policies(s: Settings, dns, store) -> Policies | None:
    """Recipient domains' MTA-STS policies (None: MAILFLOW_DELIVERY_MTA_STS=false)."""
    if not s.mta_sts:
        return None
    ctx = verifying_context(s.tls_ca_file or None)
    return Policies(dns, store, ctx, s.mta_sts_port, s.mta_sts_timeout, s.mta_sts_retry_s)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    from mailflow.store.client import StoreClient  # written by the mailbox-store service's engineer

    stop = stop or Stopper().install()
    nc = await natsconn.connect(settings.nats_url, "delivery", **settings.nats_login())
    js = nc.jetstream()
    # the queue creates them, and the sent-log bucket
    buckets = tuple(f"KV_{b}" for b, _ in streams.BUCKETS)
    await streams.wait_for(js, ("BODY", "MAIL", "JOBS", "RESULTS", "DEAD", *buckets), (streams.DELIVERY,))
    sent = await KvSentLog.open(js)
    store = StoreClient(settings.store_url, settings.service_token.get_secret_value())
    bodies = JetStreamBodies(js)
    signer = Signer(store, settings.dkim_cache_s)
    dns = DnsClient(nc, timeout=settings.mx_timeout)  # MTA-STS's and DANE's questions, through the resolver
    deliveries = Deliveries(
        directory=store,
        deliverer=store,
        bodies=bodies,
        resolver=MxClient(nc, timeout=settings.mx_timeout),
        sent=sent,
        remote=remote_config(settings),
        directory_ttl=settings.directory_cache_s,
        store_batch=settings.store_batch,
        signer=signer,
        forwarder=Forwarder(signer, settings.hostname),  # our authserv-id is our hostname (RFC 8601 §2.5)
        sieve=SieveFilter(store, store, settings.sieve_cache_s, mailer=JetStreamMailer(js, bodies), hostname=settings.hostname),
        policies=policies(settings, dns, await KvPolicyStore.open(js)),
        # DANE: in effect only when the resolver trusts a validating upstream (MAILFLOW_RESOLVER_DNSSEC_TRUST_AD)
        dane=Dane(dns),
    )
    # Messages of up to 32 jobs each: batch/16 messages per fetch, at most twice `batch` jobs in hand per lane.
    lanes = [DeliveryWorker(nc, js, deliveries, max(1, settings.batch // 16)) for _ in range(max(1, settings.lanes))]

    async def nats_ready() -> bool:
        return nc.is_connected

    app = service_app("delivery", {"nats": nats_ready})
    http = await HttpServer(app, settings.http_listen).start()
    tasks = [asyncio.create_task(lane.run(stop), name=f"lane-{n}") for n, lane in enumerate(lanes)]
    hop = deliveries.remote_cfg.router.relay
    routes = len(deliveries.remote_cfg.router.routes)
    log.info("delivery ready", extra={"http": http.port, "lanes": len(lanes), "remote_port": settings.remote_port, "relay": str(hop or ""), "routes": routes})
    try:
        await stop.wait()
        await asyncio.wait(tasks, timeout=60)
    finally:
        await http.stop()
        await store.close()
        await natsconn.close(nc)
