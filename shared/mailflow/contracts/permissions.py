"""Who may publish and subscribe to what on NATS: one user per service, the only table of it.

NATS is a trust boundary. Each service connects as its own user (`MAILFLOW_NATS_USER`,
`MAILFLOW_NATS_PASSWORD`) and may publish and subscribe to exactly the subjects below, the JetStream
API subjects of its own streams and durables included. Every installation is a NATS account of its own
(`mailflow.natsauth` writes the server's configuration from this table): an account has its own
subjects, streams and consumers, so two installations on one server, or another application's stream
named MAIL, never meet. An operation a user may not do is refused by the server ("Permissions
Violation"): a publish that needs a PubAck fails (the caller answers 4xx), a subscription gets nothing.

What a compromised service can still do is what its row allows: smtp-ingress can queue mail (that is
its job) but cannot publish delivery jobs, read the queue, or touch a stream's configuration; delivery
can queue mail too (what users' Sieve scripts send: redirect, reject, vacation);
imap-pop3 can only listen for mailbox hints. Only the queue manages streams, durables and the key-value
buckets (`streams.ensure_streams`); only delivery reads and writes that bucket.

Replies: each service's inbox is `_INBOX.<service>.>` (natsconn passes it as nats-py's inbox_prefix),
so no service can subscribe to the replies another one gets (JetStream hands pulled messages to the
puller's inbox). The resolver answers requests through `allow_responses` and may publish nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailflow.contracts import streams, subjects

STREAMS = tuple(c.name for c in streams.stream_configs())  # every stream `ensure_streams` applies


def wild(subject: str) -> str:
    """A subject template with each `{field}` as a one-token wildcard: body.{queue_id}.{chunk} -> body.*.*."""
    return re.sub(r"\{[a-z_]+\}", "*", subject)


def inbox(service: str) -> str:
    """The prefix of a service's reply subjects (nats-py's inbox_prefix)."""
    return f"_INBOX.{service}"


# --- JetStream API subjects -----------------------------------------------------------------------
def stream_info(*names: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.STREAM.INFO.{n}" for n in names)


def direct_get(stream: str) -> tuple[str, ...]:
    """Direct gets of one stream, by sequence (`...GET.<stream>`) and by subject (`...GET.<stream>.<subject>`)."""
    return (f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>")


def consume(stream_durable: tuple[str, str]) -> tuple[str, ...]:
    """Bind to one durable pull consumer, pull from it, ack/nak/term/in-progress its messages."""
    stream, durable = stream_durable
    return (
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


def manage(stream: str) -> tuple[str, ...]:
    """Everything about one stream: create, update, info, purge, get and delete messages, its consumers."""
    return (
        f"$JS.API.STREAM.*.{stream}",
        f"$JS.API.STREAM.MSG.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.API.CONSUMER.*.*.{stream}.>",  # CONSUMER.DURABLE.CREATE / MSG.NEXT / ...
        *direct_get(stream),
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",  # flow control of the ordered consumer that reads TRACE
    )


def kv(bucket: str) -> tuple[str, ...]:
    """One key-value bucket: read and write its keys."""
    stream = f"KV_{bucket}"
    return (
        *stream_info(stream),
        f"$JS.API.STREAM.MSG.GET.{stream}",
        *direct_get(stream),
        f"$KV.{bucket}.>",
    )


@dataclass(frozen=True)
class Grant:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responds: bool = False  # may answer the requests it receives (NATS allow_responses), nothing more


TRACE = subjects.TRACE_ALL  # every hop records what it did

GRANTS: dict[str, Grant] = {
    "smtp-ingress": Grant(
        publish=(wild(subjects.BODY), subjects.MAIL_QUEUED, subjects.DNS_QUERY, TRACE, *stream_info("BODY", "MAIL")),
        subscribe=(),
    ),
    "queue": Grant(
        publish=(
            wild(subjects.BODY),  # DSN bodies
            subjects.MAIL_QUEUED,  # DSNs enter like any message; a retried dead letter
            subjects.DELIVERY_JOB,
            subjects.DELIVERY_RESULT,  # a retried dead letter; a result split in parts
            subjects.MAIL_DEAD,
            subjects.DNS_QUERY,  # TLS-RPT: a domain's _smtp._tls record
            TRACE,
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.LIST",
            *(s for name in STREAMS for s in manage(name)),
            *(f"$JS.API.STREAM.CREATE.KV_{bucket}" for bucket, _ in streams.BUCKETS),
            *stream_info(*(f"KV_{bucket}" for bucket, _ in streams.BUCKETS)),
        ),
    ),
    "delivery": Grant(
        publish=(
            subjects.DELIVERY_JOB,  # a job message split in parts (mailflow.worker)
            subjects.DELIVERY_RESULT,
            subjects.MAIL_DEAD,
            subjects.MX_LOOKUP,
            subjects.DNS_QUERY,  # MTA-STS (_mta-sts TXT, mta-sts.<domain> A/AAAA), DANE (the MX hosts' TLSA)
            subjects.MAIL_QUEUED,  # messages Sieve sends (redirect, reject, vacation) enter like any message
            wild(subjects.BODY),  # ... with their bodies when large
            TRACE,
            *stream_info("JOBS", "RESULTS", "DEAD", "BODY", "MAIL"),
            *consume(streams.DELIVERY),
            *direct_get("BODY"),
            *kv(streams.SENT_LOG_BUCKET),
            *kv(streams.STS_POLICY_BUCKET),
        ),
    ),
    "resolver": Grant(subscribe=(subjects.MX_LOOKUP, subjects.DNS_QUERY), responds=True),
    "mailbox-store": Grant(publish=(wild(subjects.MAILBOX_EVENTS), subjects.USER_REVOKED, TRACE)),
    "imap-pop3": Grant(subscribe=(wild(subjects.MAILBOX_EVENTS), subjects.USER_REVOKED)),
    # The web console only watches: every hop's trace event feeds its live pipeline; it publishes nothing.
    "web": Grant(subscribe=(TRACE,)),
}


def grant(service: str) -> Grant:
    """A service's row, its own inbox added to what it may subscribe to."""
    g = GRANTS[service]
    return Grant(g.publish, (*g.subscribe, inbox(service) + ".>"), g.responds)
