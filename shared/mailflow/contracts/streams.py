"""JetStream streams and durable consumers, every one of them declared here, in code.

Only the queue service applies them (`ensure_streams`, at startup; applying them again is harmless):
its NATS user is the only one allowed to (`permissions.py`). Every other service waits at startup
until the streams and the durable it uses exist (`wait_for`), so the order in which services start
still never matters: a service started before the queue is simply not ready until the queue is. No
reader makes a consumer of its own. A stream or durable that exists with another configuration is
updated in place where JetStream allows it (a durable's subject, ack_wait, max_deliver); if it cannot
be, the one that exists is kept and a warning logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError

from mailflow.contracts import subjects

log = logging.getLogger(__name__)

DAY = 24 * 3600.0


@dataclass(frozen=True)
class Topology:
    """Everything that differs between a laptop and a cluster: replicas and how long things live."""

    replicas: int = 1  # 3 on Kubernetes (R3 streams survive the loss of one NATS node)
    queue_lifetime_s: float = 5 * DAY  # bodies must outlive the longest a message may stay queued
    dead_letter_age_s: float = 30 * DAY
    trace_age_s: float = 7 * DAY
    trace_max_bytes: int = 256 * 1024 * 1024
    duplicate_window_s: float = 120.0  # a re-publish with the same Nats-Msg-Id inside it is dropped


def stream_configs(t: Topology = Topology()) -> list[StreamConfig]:
    common = dict(storage=StorageType.FILE, num_replicas=t.replicas, duplicate_window=t.duplicate_window_s)
    return [
        # Raw bodies, one message per chunk; the queue purges a message's chunks when it is done.
        # Kept a little longer than the queue lifetime so nothing queued can lose its body.
        StreamConfig(
            name="BODY",
            subjects=[subjects.BODY_ALL.replace("{queue_id}", "*")],
            retention=RetentionPolicy.LIMITS,
            max_age=t.queue_lifetime_s + 2 * DAY,
            allow_direct=True,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        # Accepted envelopes, waiting for the queue to take them over.
        StreamConfig(
            name="MAIL",
            subjects=[subjects.MAIL_QUEUED],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        # Delivery jobs, waiting for a delivery process; their results, waiting for the queue.
        StreamConfig(
            name="JOBS",
            subjects=[subjects.DELIVERY_JOB],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        StreamConfig(
            name="RESULTS",
            subjects=[subjects.DELIVERY_RESULT],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        # What workers gave up on, with the reason, for an operator (`mailflow dead`); a retry removes it.
        StreamConfig(
            name="DEAD",
            subjects=[subjects.MAIL_DEAD],
            retention=RetentionPolicy.LIMITS,
            max_age=t.dead_letter_age_s,
            **common,
        ),
        # Diagnostics, not mail: kept in memory (no disk write per hop), bounded in age and size.
        # A restart of NATS forgets them; the mail itself is never in this stream.
        StreamConfig(
            name="TRACE",
            subjects=[subjects.TRACE_ALL],
            retention=RetentionPolicy.LIMITS,
            max_age=t.trace_age_s,
            max_bytes=t.trace_max_bytes,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            **{**common, "storage": StorageType.MEMORY},
        ),
    ]


# --- durable consumers: one per hop, (stream, durable name) ---------------------------------------
QUEUE_INTAKE = ("MAIL", "queue")  # mail.queued: smtp-ingress (and the queue's own DSNs) -> queue
DELIVERY = ("JOBS", "delivery")  # delivery.job: queue -> delivery
QUEUE_RESULTS = ("RESULTS", "queue-results")  # delivery.result: delivery -> queue

# delivery's sent log (a key-value bucket; mailflow_delivery.sentlog): only delivery reads and writes it.
SENT_LOG_BUCKET = "DELIVERY_SENT"


def sent_log_config(t: Topology = Topology()) -> KeyValueConfig:
    """Kept as long as a body (queue lifetime + 2 days): a job can come again as long as its message lives."""
    return KeyValueConfig(
        bucket=SENT_LOG_BUCKET, history=1, ttl=t.queue_lifetime_s + 2 * DAY, storage=StorageType.FILE, replicas=t.replicas
    )

# delivery's MTA-STS policy cache (RFC 8461 §5.1; mailflow_delivery.mtasts): a recipient domain's
# policy as fetched, kept across restarts; only delivery reads and writes it. An entry lives at most
# the longest max_age a policy may have (§3.2).
STS_POLICY_BUCKET = "DELIVERY_MTA_STS"


def sts_policy_config(t: Topology = Topology()) -> KeyValueConfig:
    return KeyValueConfig(bucket=STS_POLICY_BUCKET, history=1, ttl=31_557_600, storage=StorageType.FILE, replicas=t.replicas)


BUCKETS = ((SENT_LOG_BUCKET, sent_log_config), (STS_POLICY_BUCKET, sts_policy_config))


# How many times a worker tries a message before it moves it to DEAD with the last reason
# (mailflow.worker). A failure is retried after 1, 2, 4 ... 60 s, so 30 attempts span about 25 minutes:
# longer than a database failover, a NATS leader election or a store restart (then every message fails,
# and then all go through again), short enough that a message that fails for itself (a poison message)
# is set aside within half an hour instead of being retried forever. A crash of the process counts as an
# attempt too. Each consumer allows one delivery more (`max_deliver`): a message whose last attempt never
# settled (the process died) comes once more, straight to DEAD, and never stays behind in its work
# queue, which JetStream stops redelivering at max_deliver.
MAX_ATTEMPTS = 30


def pull(durable: str, subject: str, ack_wait: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=MAX_ATTEMPTS + 1,
        max_ack_pending=4096,
    )


def attempts(max_deliver: int | None) -> int:
    """The attempts a worker makes on a consumer with this max_deliver; 0: unbounded."""
    return max(0, (max_deliver or 0) - 1)


# Every durable consumer: (stream, config), created (or brought up to date) by `ensure_streams`. Many
# processes may bind the same durable and share its work.
def consumer_configs(t: Topology = Topology()) -> list[tuple[str, ConsumerConfig]]:
    return [
        (QUEUE_INTAKE[0], pull(QUEUE_INTAKE[1], subjects.MAIL_QUEUED, ack_wait=30.0)),
        # A remote SMTP transaction may take minutes; workers extend ack_wait with in_progress().
        (DELIVERY[0], pull(DELIVERY[1], subjects.DELIVERY_JOB, ack_wait=60.0)),
        (QUEUE_RESULTS[0], pull(QUEUE_RESULTS[1], subjects.DELIVERY_RESULT, ack_wait=30.0)),
    ]


_UPDATABLE = ("max_age", "duplicate_window", "allow_direct", "discard", "num_replicas", "subjects")
_CONSUMER_UPDATABLE = ("filter_subject", "ack_wait", "max_deliver", "max_ack_pending")


async def ensure_streams(js: JetStreamContext, t: Topology = Topology(), within: float = 60.0) -> None:
    """Create or update every stream and durable consumer, and create the key-value buckets. Safe to call
    again at any time, also by several processes at once. In a cluster an R3 stream takes the meta
    leader a while to place, and replicas starting together ask at the same moment: an answer that did
    not come in time, or JetStream saying it is not ready yet (503), is asked again for up to `within`
    seconds before the error is raised."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await _ensure(js, t)
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("streams not ready, asking again: %s", exc)
            await asyncio.sleep(1.0)


async def _ensure(js: JetStreamContext, t: Topology) -> None:
    for cfg in stream_configs(t):
        try:
            info = await js.stream_info(cfg.name)
        except NotFoundError:
            await js.add_stream(cfg)
            log.info("stream created", extra={"stream": cfg.name})
            continue
        have = info.config
        if (have.num_replicas or 1) > (cfg.num_replicas or 1):
            # Never shrink replicas implicitly: a service started with the default Topology (R1) must
            # not undo the R3 that the queue (MAILFLOW_QUEUE_STREAM_REPLICAS=3) applied on Kubernetes.
            cfg = dataclasses.replace(cfg, num_replicas=have.num_replicas)
        if any(getattr(have, f) != getattr(cfg, f) for f in _UPDATABLE):
            try:
                await js.update_stream(cfg)
                log.info("stream updated", extra={"stream": cfg.name})
            except Exception as exc:  # e.g. replicas on a single server: keep what works
                log.warning("stream not updated: %s", exc, extra={"stream": cfg.name})
    for stream, ccfg in consumer_configs(t):
        try:
            have = (await js.consumer_info(stream, ccfg.durable_name)).config
        except NotFoundError:
            await js.add_consumer(stream, ccfg)
            log.info("consumer created", extra={"stream": stream, "consumer": ccfg.durable_name})
            continue
        if any(getattr(have, f) != getattr(ccfg, f) for f in _CONSUMER_UPDATABLE):
            try:
                await js.add_consumer(stream, ccfg)  # create-or-update of a durable
                log.info("consumer updated", extra={"stream": stream, "consumer": ccfg.durable_name})
            except Exception as exc:
                log.warning("consumer not updated: %s", exc, extra={"stream": stream, "consumer": ccfg.durable_name})
    for bucket, config in BUCKETS:
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(config(t))
            log.info("bucket created", extra={"bucket": bucket})


async def wait_for(js: JetStreamContext, names: tuple[str, ...], consumers: tuple[tuple[str, str], ...] = ()) -> None:
    """Return once every stream in `names` and every (stream, durable) in `consumers` exists: the queue
    creates them. Waits as long as it takes (a process manager or readiness probe sees a service that
    is not ready), saying what it waits for every 30 s; a server that refuses the question (a missing
    permission) is waited for the same way, its answer in the log."""
    loop = asyncio.get_running_loop()
    delay, said = 0.1, -1e9
    while True:
        try:
            for name in names:
                await js.stream_info(name)
            for stream, durable in consumers:
                await js.consumer_info(stream, durable)
            return
        except Exception as exc:  # NotFoundError until the queue has run; a timeout while NATS is away
            if loop.time() - said >= 30:
                log.info("waiting for the queue to create the streams: %s", exc or type(exc).__name__)
                said = loop.time()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
