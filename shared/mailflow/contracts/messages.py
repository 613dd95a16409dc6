"""One pydantic model per NATS payload, named after what it says. JSON on the wire.

The JetStream hops carry batches only: `QueuedMessages`, `DeliveryJobs` and `DeliveryResults` are the
payloads of mail.queued, delivery.job and delivery.result; a batch of one is the same form. Their
items (`QueuedMessage`, `DeliveryJob`, `DeliveryResult`) never travel alone. Writers serialise the
batch model itself (one `to_bytes`), never JSON put together by hand.
Readers ignore fields they do not know (`extra="ignore"`), so a writer may add an optional field at
any time. A breaking change would be a second model on the same subject, told apart by `v` (a
discriminated union), with readers upgraded first: there is no deployed older version to keep.
A payload that does not validate is a poison message: the worker sends it to `mail.dead` with the
validation error and acknowledges it, so it never blocks the stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_defaults=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls.model_validate_json(data)


# --- smtp-ingress -> queue (stream MAIL, subject mail.queued: QueuedMessages) ---------------------

Notify = Literal["SUCCESS", "FAILURE", "DELAY", "NEVER"]


class Recipient(Contract):
    address: str  # the envelope recipient as given in RCPT TO (after source-route stripping)
    notify: list[Notify] = []  # RFC 3461 NOTIFY; empty = not given (then: failures only)
    orcpt: str | None = None  # RFC 3461 ORCPT, e.g. "rfc822;bob@example.test"
    # the local alias this external target was expanded from (smtp-ingress, from Resolution.forward):
    # the copy is forwarded mail, ARC-sealed on its way out with the alias domain's key (delivery)
    forwarded_for: str | None = None


class ClientInfo(Contract):
    ip: str
    port: int = 0
    helo: str = ""
    reverse_name: str | None = None
    listener: Literal["mx", "submission", "smtps", "local"] = "mx"
    auth_user: str | None = None  # the authenticated user's login, when there is one
    tls: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"


# Bodies up to mailflow.bodies.INLINE_MAX travel inside the envelope (`body`): URL-safe base64 in JSON
# (RFC 4648 §5; standard base64 is accepted too). `body_ref` is then "inline:<queue_id>:<size>", which a
# reader that does not know `body` cannot parse: it defers the message, it never bounces it.
_INLINE = ConfigDict(frozen=True, extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")


class QueuedMessage(Contract):
    model_config = _INLINE

    queue_id: str  # the Nats-Msg-Id of a batch of one, so JetStream drops re-publishes
    trace_id: str  # travels with the message: in its jobs, results and every trace event
    mail_from: str  # "" is the null reverse-path (bounces); never bounce a bounce
    rcpt_to: list[Recipient]
    body_ref: str  # where the raw bytes are, see mailflow.bodies (NATS max_payload defaults to 1 MB)
    size: int  # bytes of the body, Received: header included
    body: bytes | None = None  # the raw bytes themselves, when small (body_ref "inline:..."); else None
    received_at: datetime = Field(default_factory=utcnow)
    client: ClientInfo | None = None  # None for messages Mailflow made itself (DSNs)
    envid: str | None = None  # RFC 3461 ENVID
    ret: Literal["FULL", "HDRS"] | None = None  # RFC 3461 RET
    body_8bit: bool = False  # BODY=8BITMIME was given
    smtputf8: bool = False  # SMTPUTF8 was given
    # RFC 8689 REQUIRETLS was given: each onward hop must be TLS with a verified certificate of a validated
    # MX that offers REQUIRETLS too (delivery's smtp_out), or the message bounces; its DSN returns headers only
    requiretls: bool = False
    junk: bool = False  # DMARC p=quarantine failed or rspamd said "add header" at smtp-ingress: local recipients get it in their \Junk mailbox
    message_id: str = ""  # the header's Message-ID (smtp-ingress reads it, at most 998 characters; "" if none): the admin search's key


class QueuedMessages(Contract):
    """Envelopes that concurrent SMTP sessions finished together, in one message (subject mail.queued):
    one JetStream write (and fsync) and one ack for all of them; each session answers 250 once this
    message is PubAck'ed. At light load a group holds one envelope; a DSN is a group of one too."""

    v: Literal[1] = 1
    messages: list[QueuedMessage]


class DeadLetter(Contract):
    """A message a worker gave up on (subject mail.dead, stream DEAD): `mailflow dead list|show|retry|delete`.
    A retry publishes `payload` again on `subject`."""

    v: Literal[1] = 1
    subject: str  # where the message was read from
    service: str
    reason: str  # why: the validation error, or the last attempt's exception text and log ref
    payload: bytes  # the original bytes, base64 in JSON
    headers: dict[str, str] = {}
    delivered: int = 0  # how often JetStream had handed it out
    at: datetime = Field(default_factory=utcnow)


# --- queue -> delivery (stream JOBS: DeliveryJobs) and back (stream RESULTS: DeliveryResults) -----


class DeliveryJob(Contract):
    model_config = _INLINE

    queue_id: str
    trace_id: str
    attempt: int  # 1 for the first try; the queue counts
    mail_from: str
    rcpt: Recipient
    body_ref: str
    size: int
    body: bytes | None = None  # as in QueuedMessage: the queue passes an inline body on to every job
    received_at: datetime
    envid: str | None = None
    ret: Literal["FULL", "HDRS"] | None = None
    body_8bit: bool = False
    smtputf8: bool = False
    requiretls: bool = False  # QueuedMessage.requiretls
    dkim: bool = False  # sign on the way to another domain: an authenticated user's message, or a DSN
    junk: bool = False  # QueuedMessage.junk: a local recipient gets it in the \Junk mailbox; remote ones ignore it

    @property
    def idempotency_key(self) -> str:
        """Same job, same key, however often JetStream redelivers it or the queue retries it."""
        return f"{self.queue_id}/{self.rcpt.address.lower()}"


class DeliveryJobs(Contract):
    """Many jobs in one message (subject delivery.job): one JetStream write, PubAck and ack for all of
    them (up to 32, so that several delivery processes share a burst)."""

    v: Literal[1] = 1
    jobs: list[DeliveryJob]


Outcome = Literal["delivered", "deferred", "bounced"]


class TlsFailureDetail(Contract):
    """One MX address where the recipient domain's TLS policy was not met (RFC 8460 §4.3 names)."""

    result_type: str  # starttls-not-supported, certificate-host-mismatch, certificate-expired,
    # certificate-not-trusted, validation-failure (the MX is not in the policy), sts-policy-invalid,
    # sts-policy-fetch-error (the policy could not be had: then on no MX)
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""
    detail: str = ""


class TlsReport(Contract):
    """What the recipient domain's TLS policy (MTA-STS, RFC 8461) made of one delivery attempt, in the
    terms of a TLS-RPT report (RFC 8460 §4.3): `policy_type` sts or no-policy-found, the policy
    (`policy_mode`, `policy_id`, `mx`, its text a line each in `policy_strings`), `success` (the
    session that took the message was made as the policy requires; with no policy: over TLS) and the
    failures seen on the way. Only the first result of a transaction carries it: the queue adds the
    attempts up per day and domain and sends each domain that asks (`_smtp._tls`) its daily report."""

    policy_domain: str
    policy_type: Literal["sts", "no-policy-found"]
    policy_mode: Literal["enforce", "testing", "none"] | None = None
    policy_id: str = ""
    mx: list[str] = []
    policy_strings: list[str] = []
    success: bool = True
    failures: list[TlsFailureDetail] = []


class DeliveryResult(Contract):
    queue_id: str
    trace_id: str = ""
    rcpt: str
    attempt: int
    outcome: Outcome
    status: str  # enhanced status code: "2.0.0", "4.4.1", "5.1.1"
    diagnostic: str = ""  # the remote server's reply or our reason, for the DSN and `queue show`
    remote_mta: str | None = None  # the host that answered, for DSN Remote-MTA
    at: datetime = Field(default_factory=utcnow)
    tls: TlsReport | None = None  # a remote domain's TLS verdict on the transaction's first result (None: local, relay, map)


class DeliveryResults(Contract):
    """The results of one delivery batch in one message (subject delivery.result): one JetStream write,
    PubAck and ack for the whole batch instead of one per recipient."""

    v: Literal[1] = 1
    results: list[DeliveryResult]


# --- delivery -> resolver (core NATS request/reply, subject dns.mx) ------------------------------


class MxRequest(Contract):
    v: Literal[1] = 1
    domain: str


class MxHost(Contract):
    preference: int
    host: str
    addresses: list[str] = []  # IPv4 and IPv6, as text
    # DNSSEC (RFC 7672 §2.2): the MX answer and this host's address answers were all authenticated (AD
    # from a resolver the resolver service trusts, MAILFLOW_RESOLVER_DNSSEC_TRUST_AD); only then does
    # delivery look up the host's TLSA records (DANE). Always False unless that setting is on.
    secure: bool = False


MxStatus = Literal["ok", "nxdomain", "null_mx", "no_mail_host", "temp_fail"]


class MxReply(Contract):
    v: Literal[1] = 1
    domain: str
    status: MxStatus  # ok: hosts in order; nxdomain, null_mx, no_mail_host: permanent; temp_fail: retry
    hosts: list[MxHost] = []  # sorted by preference, equal preferences shuffled
    implicit: bool = False  # no MX: the domain's own A/AAAA (RFC 5321 §5.1)
    error: str | None = None
    ttl: int = 0
    cached: bool = False
    secure: bool = False  # the MX answer (implicit: the no-MX answer and the addresses) was DNSSEC-authenticated


# --- smtp-ingress (mail authentication) and the CLI -> resolver (core NATS request/reply, dns.query) ---

DnsType = Literal["TXT", "A", "AAAA", "MX", "PTR", "SRV", "TLSA"]
DnsStatus = Literal["ok", "nxdomain", "nodata", "temp_fail"]


class DnsQuery(Contract):
    v: Literal[1] = 1
    name: str
    type: DnsType


class DnsAnswer(Contract):
    """One DNS question's answer, as the checks of `mailflow.authn` read it. `records` as text:
    TXT: each record's character-strings joined without a separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2),
    UTF-8 with undecodable octets replaced; A/AAAA: the address; MX: "preference host" ("0 ." for a
    null MX, RFC 7505); PTR: the name; SRV: "priority weight port target"; TLSA (RFC 6698): "usage selector
    matching-type data", three decimal numbers and the data in lower-case hex. `name` and host names are lower case without the final dot
    (A-labels). nxdomain and nodata are answers (cached for the SOA's negative TTL); nxdomain is also
    the answer, with `error` saying so, for a name DNS cannot hold (`mailflow.dns.query_name`), which
    is never asked. temp_fail is none (SERVFAIL, timeout, an answer over the resolver's size limits, no
    resolver) and is never cached. `ttl`: seconds left; `cached`: from the resolver's cache. `secure`: the
    answer (positive or negative) was DNSSEC-authenticated: the AD bit from a resolver the resolver
    service trusts (MAILFLOW_RESOLVER_DNSSEC_TRUST_AD); always False unless that setting is on."""

    v: Literal[1] = 1
    name: str
    type: DnsType
    status: DnsStatus
    records: list[str] = []
    ttl: int = 0
    error: str | None = None
    cached: bool = False
    secure: bool = False


# --- mailbox-store -> watchers (core NATS, subject mailbox.events.<user_id>) --------------------

MailboxEventKind = Literal["appended", "flags", "expunged", "mailbox_created", "mailbox_deleted", "mailbox_renamed"]


class MailboxEvent(Contract):
    v: Literal[1] = 1
    user_id: int
    mailbox_id: int
    mailbox: str  # the mailbox name at the time of the event
    kind: MailboxEventKind
    uids: list[int] = []
    modseq: int = 0  # the mailbox's HIGHESTMODSEQ after the change
    origin: str | None = None  # an id of the session that made the change, so it can skip its own echo
    # "appended" events whose writer knows them: each new message's flags (in `uids` order) and the
    # mailbox's HIGHESTMODSEQ just before the change (the new messages all have `modseq`). A session
    # whose view stands exactly at `since` can add the messages without asking the store.
    flags: list[list[str]] | None = None
    since: int = 0


# --- mailbox-store -> imap-pop3 (core NATS, subject user.revoked) -------------------------------

RevokeReason = Literal["password", "disabled", "deleted"]


class UserRevoked(Contract):
    """End the user's sessions and forget its cached logins: those of a generation below `generation`,
    or all of them when `generation` is None (the user is deleted; its id is never given again)."""

    v: Literal[1] = 1
    user_id: int
    generation: int | None = None
    reason: RevokeReason


# --- every hop -> TRACE (subject trace.<queue_id>) ----------------------------------------------

TraceStep = Literal["ingress", "queue", "resolver", "delivery", "mailbox", "retrieved", "bounce", "relay"]


class TraceEvent(Contract):
    v: Literal[1] = 1
    queue_id: str
    trace_id: str
    step: TraceStep
    service: str
    at: datetime = Field(default_factory=utcnow)
    duration_ms: float = 0.0
    detail: str = ""


# NATS headers we set, beside Nats-Msg-Id.
TRACE_HEADER = "Mailflow-Trace"
