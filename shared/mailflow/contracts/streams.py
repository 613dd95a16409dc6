"""JetStream streams and consumers, declared in code.

The queue service applies them at startup (`ensure_streams`), and so does every other service that
publishes, so the order in which services start never matters; applying them again is harmless.
A stream that exists with another configuration is updated in place where JetStream allows it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

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
            subjects=[subjects.MAIL_QUEUED, subjects.MAIL_QUEUED_BATCH],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        StreamConfig(
            name="JOBS",
            subjects=[subjects.DELIVERY_JOB, subjects.DELIVERY_JOBS],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        StreamConfig(
            name="RESULTS",
            subjects=[subjects.DELIVERY_RESULT, subjects.DELIVERY_RESULTS],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            **common,
        ),
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


def pull(durable: str, subject: str, ack_wait: float, max_deliver: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=4096,
    )


# Durable pull consumers: (stream, config). Many processes may bind the same durable and share its work.
def consumer_configs(t: Topology = Topology()) -> list[tuple[str, ConsumerConfig]]:
    return [
        ("MAIL", pull("queue", subjects.MAIL_QUEUED, ack_wait=30.0, max_deliver=-1)),
        # A remote SMTP transaction may take minutes; workers extend ack_wait with in_progress().
        ("JOBS", pull("delivery", subjects.DELIVERY_JOB, ack_wait=60.0, max_deliver=-1)),
        ("RESULTS", pull("queue-results", subjects.DELIVERY_RESULT, ack_wait=30.0, max_deliver=-1)),
        ("RESULTS", pull("queue-result-batches", subjects.DELIVERY_RESULTS, ack_wait=30.0, max_deliver=-1)),
    ]


# Durable names, for code that binds to them.
QUEUE_INTAKE = ("MAIL", "queue")
DELIVERY = ("JOBS", "delivery")
QUEUE_RESULTS = ("RESULTS", "queue-results")
QUEUE_RESULT_BATCHES = ("RESULTS", "queue-result-batches")
DELIVERY_BATCHES = ("JOBS", "delivery-batches")
QUEUE_INTAKE_BATCHES = ("MAIL", "queue-batches")


def queue_batches_consumer() -> ConsumerConfig:
    """Created by the queue itself when it starts reading mail.queued.v2, never by `ensure_streams`:
    smtp-ingress takes its activity as the sign that a queue reads envelope groups."""
    return pull(QUEUE_INTAKE_BATCHES[1], subjects.MAIL_QUEUED_BATCH, ack_wait=30.0, max_deliver=-1)


def delivery_batches_consumer() -> ConsumerConfig:
    """Created by delivery itself when it starts reading delivery.job.v2 (`ensure_consumer`), never by
    `ensure_streams`: the queue takes its activity as the sign that a batch reader is running."""
    return pull(DELIVERY_BATCHES[1], subjects.DELIVERY_JOBS, ack_wait=60.0, max_deliver=-1)


async def ensure_consumer(js: JetStreamContext, stream: str, cfg: ConsumerConfig) -> None:
    try:
        await js.consumer_info(stream, cfg.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, cfg)
        log.info("consumer created", extra={"stream": stream, "consumer": cfg.durable_name})


_UPDATABLE = ("max_age", "duplicate_window", "allow_direct", "discard", "num_replicas", "subjects")


async def ensure_streams(js: JetStreamContext, t: Topology = Topology()) -> None:
    """Create or update every stream and durable consumer. Safe to call from every service, at any time."""
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
            await js.consumer_info(stream, ccfg.durable_name)
        except NotFoundError:
            await js.add_consumer(stream, ccfg)
            log.info("consumer created", extra={"stream": stream, "consumer": ccfg.durable_name})
