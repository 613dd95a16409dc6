"""Where each job goes and what became of it: local mailboxes through the store, others over SMTP.

`Deliveries.run(jobs)` returns one `DeliveryResult` per job (same order) and the trace events to
publish; it never raises for a single recipient's trouble. Mapping (STYLE §5):
  store stored/duplicate -> delivered; unknown_user -> bounced 5.1.1; quota -> 4.2.2 or 5.2.2;
  store unreachable or "failed" -> deferred 4.3.0; store's disk full -> deferred 452 4.3.1;
  body gone -> bounced 5.3.0
  remote: the next hop (nexthop.py: transport map, relay, or the domain's MX) decides where to go
  MX nxdomain/no_mail_host -> bounced 5.1.2; null MX -> bounced 5.1.10 (RFC 7505); DNS trouble -> 4.4.3
  a transport map host whose MX lookup fails in any way -> deferred 4.4.3 (the map is the operator's)
  SMTP per recipient: 2xx delivered, 4xx and 552 deferred, 5xx bounced (from a relay too)
  no host took the message -> deferred with smtp_out's status: 4.4.1 network, 4.7.4 STARTTLS missing,
  4.7.5 TLS failed or no MX host met its DANE TLSA records (dane.py: never sent in clear instead),
  4.7.x AUTH refused (a relay's 535 5.7.8 -> 4.7.8: a wrong relay password is the
  operator's to fix, so users' mail waits in the queue instead of bouncing; a WARNING says so)
  MTA-STS (mtasts.py; a recipient domain's own MX only, never the relay or a transport map host):
  policy enforce -> only MX hosts its mx patterns match, each over STARTTLS with a certificate that
  verifies for the MX name; none of them usable -> deferred 4.7.4 (STARTTLS missing) or 4.7.5
  (certificate, or no MX in the policy: 4.7.0) "MTA-STS policy of <domain> (enforce) ...", which the
  bounce carries when the queue gives up; testing -> delivered as without a policy, the failures
  reported. Every remote-MX result carries `tls`, the TlsReport (RFC 8460 terms), also counted in
  metrics.STS_SESSIONS and logged with the delivery line
  REQUIRETLS (RFC 8689, `requiretls_route`): no route over authenticated TLS -> bounced 5.7.10, decided
  from the route alone before the body is read; no host that took it over such TLS -> bounced 5.7.10
  (or 5.7.30: REQUIRETLS not offered), never deferred to be tried in clear
  a job marked `dkim` whose signing key the store cannot give -> deferred 4.3.0 (dkim.py)
  a forwarded copy (an alias's external target, forwarding.py): past MAX_HOPS Received: -> bounced
  5.4.6; its alias domain's key set unavailable for the ARC seal -> deferred 4.3.0
  "can't check" (directory unreachable, sent log unreadable) -> deferred, never bounced.
Sieve (sieve.py, when `sieve` is given): a local job's item becomes the items its users' active
scripts make of it (several mailboxes, or none: discarded, redirected or rejected -> delivered); the job's result is the worst of
its items' (deferred, else bounced, else delivered); a script the store cannot give -> deferred 4.3.0.
A job marked `junk` (DMARC p=quarantine at smtp-ingress) goes to each local user's \\Junk mailbox (the
store picks it); a remote recipient's copy leaves as any other.
The caller publishes the results and only then acknowledges the jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mailflow import log as mlog
from mailflow.authn.dkim import field_name, split
from mailflow.bodies import Bodies, BodyMissing
from mailflow.cache import Cache, SingleFlight
from mailflow.contracts.messages import (
    DeliveryJob,
    DeliveryResult,
    MxHost,
    TlsFailureDetail,
    TlsReport,
    TraceEvent,
)
from mailflow.dns import Resolver
from mailflow.errors import InsufficientStorage
from mailflow.store.api import Deliverer, DeliverItem, DeliverResult, Directory
from mailflow_delivery import metrics, smtp_out
from mailflow_delivery.dane import Dane
from mailflow_delivery.dkim import KeysUnavailable, Signer
from mailflow_delivery.forwarding import Forwarder, LoopDetected, transaction_key
from mailflow_delivery.mtasts import Policies, Verdict
from mailflow_delivery.nexthop import NextHop, Router
from mailflow_delivery.sentlog import SentLog
from mailflow_delivery.sieve import SieveFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteConfig:
    port: int = 25
    helo: str = "localhost"
    tls: smtp_out.TlsPolicy = field(default_factory=smtp_out.TlsPolicy)
    timeouts: smtp_out.Timeouts = field(default_factory=smtp_out.Timeouts)
    max_per_domain: int = 10  # connections per next hop: a recipient domain's MX, a map host, the relay
    source_address: str | None = None
    router: Router = field(default_factory=Router)  # transport map and relay; none: every domain's own MX
    sts_tls: smtp_out.TlsPolicy = field(default_factory=lambda: smtp_out.TlsPolicy("require"))  # MTA-STS: verified STARTTLS


@dataclass(frozen=True)
class StsPlan:
    """What a domain's MTA-STS verdict makes of its MX hosts: the hosts to try, the TLS policy, and
    the hosts left out (failures before any connection)."""

    verdict: Verdict
    hosts: list[MxHost]
    tls: smtp_out.TlsPolicy | None  # None: the configured one (no policy, or mode none)
    skipped: list[TlsFailureDetail]

    @classmethod
    def of(cls, verdict: Verdict, hosts: list[MxHost], required: smtp_out.TlsPolicy, usual: smtp_out.TlsPolicy) -> StsPlan:
        policy = verdict.policy
        if policy is None or policy.mode == "none":
            return cls(verdict, hosts, None, [])
        out = [h for h in hosts if not policy.allows(h.host)]
        skipped = [TlsFailureDetail(result_type="validation-failure", receiving_mx_hostname=h.host, detail="MX host not in the policy") for h in out]
        if policy.mode == "enforce":
            return cls(verdict, [h for h in hosts if policy.allows(h.host)], required, skipped)
        return cls(verdict, hosts, dataclasses.replace(required, fallback=usual), skipped)

    def report(self, outcome: smtp_out.Outcome | None, failures: list[smtp_out.TlsFailure]) -> TlsReport:
        found = [*self.skipped, *(TlsFailureDetail(result_type=f.result, receiving_mx_hostname=f.host, receiving_ip=f.address, detail=f.detail[:300]) for f in failures)]
        policy = self.verdict.policy
        enforced = policy is not None and policy.mode != "none"
        if outcome is not None and outcome.tls is None and not enforced:  # in clear: RFC 8460 §4.3.1 says so
            found.append(TlsFailureDetail(result_type="starttls-not-supported", receiving_mx_hostname=outcome.host, receiving_ip=outcome.address))
        success = outcome is not None and outcome.tls is not None and (not enforced or (policy.allows(outcome.host) and not outcome.fallback))
        report = self.verdict.report(success, found)
        if self.tls is not None:
            metrics.STS_SESSIONS.labels(self.verdict.mode, "success" if report.success else "failure").inc()
            for f in report.failures:
                metrics.STS_SESSIONS.labels(self.verdict.mode, f.result_type).inc()
        return report


def return_path(mail_from: str) -> bytes:
    """The trace line final delivery adds; the null sender of a bounce is `<>`."""
    return b"Return-Path: <" + mail_from.encode() + b">\r\n"


def result(job: DeliveryJob, outcome: str, status: str, diagnostic: str = "", remote_mta: str | None = None, tls: TlsReport | None = None) -> DeliveryResult:
    return DeliveryResult(
        queue_id=job.queue_id,
        trace_id=job.trace_id,
        rcpt=job.rcpt.address,
        attempt=job.attempt,
        outcome=outcome,
        status=status,
        diagnostic=diagnostic[:1000],
        remote_mta=remote_mta,
        tls=tls,
    )


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


class DomainRoutes:
    """Is a recipient's domain ours? One directory lookup per domain per `ttl`, shared by every
    concurrent job (a REST call per recipient would cost the throughput target). The store is asked
    about the domain itself, never about the address: a verdict cached per domain must come from the
    domain, or one odd address (a quoted local part the store cannot take) would send the whole domain's
    mail to its public MX. For a local domain the store itself decides per recipient (aliases, unknown
    users) when it is handed the message.
    A failed lookup is not remembered: the jobs are deferred ("can't check" is not "doesn't exist").
    At most `size` domains are remembered, the least recently used going first."""

    def __init__(
        self,
        directory: Directory,
        ttl: float = 30.0,
        remote_ttl: float = 5.0,
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        # "not ours" is remembered briefly: a domain just added must not be sent out to its MX for long
        self.directory, self.ttl, self.remote_ttl = directory, ttl, min(ttl, remote_ttl)
        self.items: Cache[str, bool] = Cache(size, clock)
        self._flights: SingleFlight[str, bool] = SingleFlight()

    async def is_local(self, address: str) -> bool:
        domain = domain_of(address)
        hit = self.items.get(domain)
        if hit is not None:
            return hit
        return await self._flights.run(domain, lambda: self._ask(domain))

    async def _ask(self, domain: str) -> bool:
        local = await self.directory.is_local_domain(domain)
        self.items.put(domain, local, self.ttl if local else self.remote_ttl)
        return local


class Deliveries:
    def __init__(
        self,
        directory: Directory,
        deliverer: Deliverer,
        bodies: Bodies,
        resolver: Resolver,
        sent: SentLog,
        remote: RemoteConfig = RemoteConfig(),
        directory_ttl: float = 30.0,
        store_batch: int = 64,
        service: str = "delivery",
        signer: Signer | None = None,  # None: nothing is signed
        forwarder: Forwarder | None = None,  # forwarded copies; None: sent as they are, unsealed
        policies: Policies | None = None,  # recipient domains' MTA-STS policies; None: not looked up
        dane: Dane | None = None,  # TLSA records of MX hosts with secure DNS (RFC 7672); None: not looked at
        sieve: SieveFilter | None = None,  # users' Sieve scripts at local delivery; None: not run
    ):
        self.routes = DomainRoutes(directory, directory_ttl)
        self.deliverer, self.bodies, self.resolver, self.sent = deliverer, bodies, resolver, sent
        self.remote_cfg, self.store_batch, self.service = remote, store_batch, service
        self.signer, self.policies, self.dane = signer, policies, dane
        self.sieve = sieve
        self.forwarder = forwarder or Forwarder(None, "")
        self._slots: dict[NextHop, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(self.remote_cfg.max_per_domain))

    async def run(self, jobs: list[DeliveryJob]) -> tuple[list[DeliveryResult], list[TraceEvent]]:
        started, began = time.perf_counter(), datetime.now(UTC)  # events are stamped `began + duration`
        out: dict[int, DeliveryResult] = {}
        traces: list[TraceEvent] = []
        routes = await asyncio.gather(*(self.routes.is_local(j.rcpt.address) for j in jobs), return_exceptions=True)
        routed_ms = (time.perf_counter() - started) * 1000
        local, remote = [], []
        for i, (job, is_local) in enumerate(zip(jobs, routes, strict=True)):
            if isinstance(is_local, BaseException):
                log.warning("directory lookup failed: %s", is_local, extra={"queue_id": job.queue_id})
                out[i] = result(job, "deferred", "4.4.3", "451 4.4.3 recipient lookup failed, will retry")
            elif is_local:
                local.append((i, job))
            else:
                remote.append((i, job))
        # The resolver step of a local recipient: the directory said the domain is ours, so no MX
        # lookup (a remote one gets its step from the MX answer, in _domain).
        for qid, trace_id, domain in dict.fromkeys((j.queue_id, j.trace_id, domain_of(j.rcpt.address)) for _, j in local):
            traces.append(
                TraceEvent(queue_id=qid, trace_id=trace_id, step="resolver", service=self.service, at=began + timedelta(milliseconds=routed_ms), duration_ms=routed_ms, detail=f"{domain}: local domain, to mailbox-store (no MX lookup)")
            )
        via: dict[int, NextHop] = {}
        local_res, remote_res = await asyncio.gather(self.local(local), self.remote(remote, traces, via))
        out.update(local_res)
        out.update(remote_res)
        results = [out[i] for i in range(len(jobs))]
        took = (time.perf_counter() - started) * 1000
        local_ids = {i for i, _ in local}
        for i, (job, r) in enumerate(zip(jobs, results, strict=True)):
            route = "local" if i in local_ids else "remote"
            metrics.RECIPIENTS.labels(route, r.outcome).inc()
            hop = via.get(i)
            sts = ""
            if r.tls is not None and r.tls.policy_type == "sts":
                sts = f"MTA-STS {r.tls.policy_mode} {'met' if r.tls.success else 'not met'}: "
            traces.append(
                TraceEvent(
                    queue_id=job.queue_id,
                    trace_id=job.trace_id,
                    step="delivery",
                    service=self.service,
                    at=began + timedelta(milliseconds=took),
                    duration_ms=took,
                    detail=(f"{r.outcome} <{r.rcpt}> {r.status} " + (f"via {hop}: " if hop else "") + sts + r.diagnostic).strip()[:500],
                )
            )
            with mlog.context(queue_id=job.queue_id, trace_id=job.trace_id):
                extra = {"rcpt": r.rcpt, "route": hop.kind if hop else route, "status": r.status, "attempt": job.attempt, "remote": r.remote_mta}
                if r.tls is not None and r.tls.policy_type == "sts":
                    extra["mta_sts"] = f"{r.tls.policy_mode} {'ok' if r.tls.success else 'failed'}"
                if hop is not None and hop.kind != "mx":
                    extra["next_hop"] = hop.target()
                log.info(r.outcome, extra=extra)
        return results, traces

    # --- local: the mailbox store ---------------------------------------------------------------

    async def _bodies(self, jobs: list[DeliveryJob]) -> dict[str, bytes | BaseException]:
        """body_ref -> the raw message: inline in the job, or read from stream BODY (once per ref)."""
        out: dict[str, bytes | BaseException] = {j.body_ref: j.body for j in jobs if j.body is not None}
        refs = list(dict.fromkeys(j.body_ref for j in jobs if j.body_ref not in out))
        if refs:
            got = await asyncio.gather(*(self.bodies.get(r) for r in refs), return_exceptions=True)
            out.update(zip(refs, got, strict=True))
        return out

    async def local(self, items: list[tuple[int, DeliveryJob]]) -> dict[int, DeliveryResult]:
        if not items:
            return {}
        started = time.perf_counter()
        out: dict[int, DeliveryResult] = {}
        bodies = await self._bodies([j for _, j in items])
        todo: list[tuple[int, DeliveryJob, DeliverItem]] = []
        for i, job in items:
            body = bodies[job.body_ref]
            if isinstance(body, BodyMissing):
                out[i] = result(job, "bounced", "5.3.0", "554 5.3.0 message body is gone from the queue")
            elif isinstance(body, BaseException):
                out[i] = result(job, "deferred", "4.3.0", "451 4.3.0 message body unavailable, will retry")
            else:
                # Final delivery: the accepted bytes (Received: lines included) under a Return-Path:
                # line with the envelope sender (RFC 5321 §4.4), as every MDA writes it.
                body = return_path(job.mail_from) + body
                item = DeliverItem(key=job.idempotency_key, recipient=job.rcpt.address, body=body, queue_id=job.queue_id, trace_id=job.trace_id, junk=job.junk)
                todo.append((i, job, item))
        if self.sieve is not None:
            todo = await self._filter(todo, out)
        chunks = [todo[k : k + self.store_batch] for k in range(0, len(todo), self.store_batch)]
        answers = await asyncio.gather(*(self.deliverer.deliver([t[2] for t in c]) for c in chunks), return_exceptions=True)
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, InsufficientStorage):
                log.warning("mailbox store is out of disk space: %s", answer)
                for i, job, _ in chunk:
                    _worst(out, i, result(job, "deferred", "4.3.1", "452 4.3.1 mailbox store out of disk space, will retry"))
                continue
            if isinstance(answer, BaseException):
                log.warning("mailbox store did not take a batch: %s", answer)
                for i, job, _ in chunk:
                    _worst(out, i, result(job, "deferred", "4.3.0", "451 4.3.0 mailbox store unavailable, will retry"))
                continue
            for (i, job, _), ans in zip(chunk, answer, strict=True):
                _worst(out, i, self._stored(job, ans))
        metrics.BATCH_SECONDS.labels("local").observe(time.perf_counter() - started)
        return out

    async def _filter(self, todo: list[tuple[int, DeliveryJob, DeliverItem]], out: dict[int, DeliveryResult]) -> list[tuple[int, DeliveryJob, DeliverItem]]:
        """The items the recipients' Sieve scripts make of each job's item (mailflow_delivery.sieve). A job
        whose scripts could not be read is deferred; one every script discarded is delivered (to nobody)."""
        expanded = await asyncio.gather(*(self.sieve.expand(item, job.mail_from) for _, job, item in todo), return_exceptions=True)
        kept: list[tuple[int, DeliveryJob, DeliverItem]] = []
        for (i, job, item), items in zip(todo, expanded, strict=True):
            if isinstance(items, BaseException):
                log.warning("sieve script unavailable: %s", items, extra={"queue_id": job.queue_id})
                out[i] = result(job, "deferred", "4.3.0", "451 4.3.0 recipient's Sieve script unavailable, will retry")
            elif items is None:
                kept.append((i, job, item))
            elif not items:
                out[i] = result(job, "delivered", "2.0.0", "250 2.0.0 not filed: the recipient's Sieve script discarded, redirected or rejected it")
            else:
                kept += [(i, job, it) for it in items]
        return kept

    @staticmethod
    def _stored(job: DeliveryJob, ans: DeliverResult) -> DeliveryResult:
        match ans.status:
            case "stored" | "duplicate":
                return result(job, "delivered", "2.0.0", f"250 2.0.0 {ans.status} in mailbox")
            case "unknown_user":
                return result(job, "bounced", "5.1.1", f"550 5.1.1 <{job.rcpt.address}>: no such user here")
            case "quota_exceeded" if ans.permanent:
                return result(job, "bounced", "5.2.2", "552 5.2.2 mailbox full")
            case "quota_exceeded":
                return result(job, "deferred", "4.2.2", "452 4.2.2 mailbox full, will retry")
            case _:
                return result(job, "deferred", "4.3.0", f"451 4.3.0 mailbox store could not store: {ans.detail}"[:300])

    # --- remote: MX and SMTP ----------------------------------------------------------------------

    async def remote(self, items: list[tuple[int, DeliveryJob]], traces: list[TraceEvent], via: dict[int, NextHop]) -> dict[int, DeliveryResult]:
        """Remote recipients, grouped by next hop (`via` gets each one's): a relay takes a message for
        many domains in one transaction."""
        if not items:
            return {}
        out: dict[int, DeliveryResult] = {}
        done = await asyncio.gather(*(self.sent.get(j.idempotency_key) for _, j in items), return_exceptions=True)
        todo: dict[NextHop, list[tuple[int, DeliveryJob]]] = defaultdict(list)
        for (i, job), prev in zip(items, done, strict=True):
            if isinstance(prev, BaseException):
                out[i] = result(job, "deferred", "4.3.0", "451 4.3.0 delivery log unavailable, will retry")
            elif prev is not None:  # sent before this job was redelivered: never again
                out[i] = prev.model_copy(update={"attempt": job.attempt})
                metrics.DUPLICATES.inc()
            else:
                via[i] = self.remote_cfg.router.next_hop(domain_of(job.rcpt.address))
                todo[via[i]].append((i, job))
        per_hop = await asyncio.gather(*(self._hop(hop, js, traces) for hop, js in todo.items()))
        for part in per_hop:
            out.update(part)
        return out

    async def _hop(self, hop: NextHop, items: list[tuple[int, DeliveryJob]], traces: list[TraceEvent]) -> dict[int, DeliveryResult]:
        """The hop's hosts (its MX, unless the hop is a host itself), then one transaction per message.
        The resolver step of the trace names the route of each recipient domain."""
        domains = {(j.queue_id, j.trace_id, domain_of(j.rcpt.address)) for _, j in items}
        if not hop.lookup_mx:
            for qid, trace_id, domain in domains:
                traces.append(TraceEvent(queue_id=qid, trace_id=trace_id, step="resolver", service=self.service, duration_ms=0, detail=f"{domain}: via {hop} (no MX lookup)"))
            hosts = [MxHost(preference=0, host=hop.host, addresses=[hop.host])]
        else:
            started = time.perf_counter()
            mx = await self.resolver.lookup(hop.host)
            took = (time.perf_counter() - started) * 1000
            metrics.MX_SECONDS.observe(took / 1000)
            found = f"{mx.status} " + ", ".join(f"{h.preference} {h.host}" for h in mx.hosts)
            for qid, trace_id, domain in domains:
                detail = f"{domain}: {found}" if hop.kind == "mx" else f"{domain}: via {hop}: {found}"
                traces.append(TraceEvent(queue_id=qid, trace_id=trace_id, step="resolver", service=self.service, duration_ms=took, detail=detail.strip()))
            if mx.status != "ok":
                return {i: result(job, *self._no_hosts(hop, mx.status, mx.error)) for i, job in items}
            hosts = mx.hosts
        by_message: dict[tuple[str, str], list[tuple[int, DeliveryJob]]] = defaultdict(list)
        for i, job in items:
            by_message[transaction_key(job)].append((i, job))
        sts = None
        if hop.kind == "mx":  # the domain's own MX: its MTA-STS policy applies, and TLS-RPT counts
            verdict = await self.policies.get(hop.host) if self.policies is not None else Verdict(hop.host)
            sts = StsPlan.of(verdict, hosts, self.remote_cfg.sts_tls, self.remote_cfg.tls)
        parts = await asyncio.gather(*(self._send(hop, hosts, group, sts) for group in by_message.values()))
        out: dict[int, DeliveryResult] = {}
        for part in parts:
            out.update(part)
        return out

    @staticmethod
    def _no_hosts(hop: NextHop, status: str, error: str | None) -> tuple[str, str, str]:
        """A failed MX lookup: permanent answers bounce for a recipient domain's own MX only; a map
        host that does not resolve is a configuration mistake, never the sender's."""
        domain = hop.host
        if hop.kind != "mx":
            return "deferred", "4.4.3", f"451 4.4.3 MX lookup for {domain} ({hop}) failed: {error or status}"
        return {
            "nxdomain": ("bounced", "5.1.2", f"550 5.1.2 domain {domain} does not exist"),
            "no_mail_host": ("bounced", "5.1.2", f"550 5.1.2 domain {domain} has no mail host"),
            "null_mx": ("bounced", "5.1.10", f"556 5.1.10 domain {domain} accepts no mail (null MX)"),
        }.get(status, ("deferred", "4.4.3", f"451 4.4.3 MX lookup for {domain} failed: {error or 'temporary'}"))

    async def _send(self, hop: NextHop, hosts: list[MxHost], group: list[tuple[int, DeliveryJob]], sts: StsPlan | None = None) -> dict[int, DeliveryResult]:
        first = group[0][1]
        # REQUIRETLS: the route alone decides (TLS-Required: No does not count), before the body is read
        route = self._route(hop, hosts, group, sts) if first.requiretls else None
        if isinstance(route, dict):
            return route
        try:
            body = first.body if first.body is not None else await self.bodies.get(first.body_ref)
        except BodyMissing:
            return {i: result(j, "bounced", "5.3.0", "554 5.3.0 message body is gone from the queue") for i, j in group}
        except Exception:
            return {i: result(j, "deferred", "4.3.0", "451 4.3.0 message body unavailable, will retry") for i, j in group}
        cfg = self.remote_cfg
        # RFC 8689 §5: "TLS-Required: No" asks that the domain's TLS policies be ignored (not REQUIRETLS)
        relaxed = not first.requiretls and tls_not_required(body)
        if relaxed:
            metrics.REQUIRETLS.labels("tls_required_no").inc()
            sts = None
        if route is None:
            route = self._route(hop, hosts, group, sts)
            if isinstance(route, dict):
                return route
        hosts, tls = route
        if first.dkim and self.signer is not None:
            try:
                body, keys = await self.signer.sign(body)
            except KeysUnavailable as exc:
                metrics.DKIM.labels("deferred").inc()
                log.warning("%s", exc, extra={"queue_id": first.queue_id})
                return {i: result(j, "deferred", "4.3.0", "451 4.3.0 DKIM signing key unavailable, will retry") for i, j in group}
            metrics.DKIM.labels("signed" if keys else "unsigned").inc()
        if first.rcpt.forwarded_for:
            sent = await self._forwarded(group, body)
            if isinstance(sent, dict):  # refused: the group's results
                return sent
            body = sent
        env = smtp_out.Envelope(
            mail_from=first.mail_from,
            rcpts=[j.rcpt.address for _, j in group],
            data=body,
            body_8bit=first.body_8bit,
            smtputf8=first.smtputf8,
            requiretls=first.requiretls,
        )
        started = time.perf_counter()
        # DANE (dane.py): only hosts from an MX lookup can be secure; a relay or `[host]` never is
        host_tls = await self.dane.rules(hop.host, hosts, hop.port or cfg.port) if self.dane is not None and not relaxed else None
        async with self._slots[hop]:
            metrics.CONNECTIONS.inc()
            try:
                outcome = await smtp_out.deliver(hosts, hop.port or cfg.port, env, cfg.helo, tls, cfg.timeouts, cfg.source_address, hop.auth, host_tls)
            except smtp_out.Unreachable as exc:
                metrics.SESSIONS.labels("unreachable").inc()
                report = sts.report(None, exc.failures) if sts is not None else None
                return first_carries(unreachable(hop, group, exc, sts), group, report)
            finally:
                metrics.CONNECTIONS.dec()
        metrics.SESSIONS.labels("ok").inc()
        metrics.BATCH_SECONDS.labels("remote").observe(time.perf_counter() - started)
        report = sts.report(outcome, outcome.tls_failures) if sts is not None else None
        if report is not None and report.failures and sts is not None and sts.tls is not None:
            log.warning(
                "MTA-STS policy of %s (%s) not met: %s", hop.host, report.policy_mode, "; ".join(f"{f.receiving_mx_hostname or hop.host}: {f.result_type}" for f in report.failures),
                extra={"queue_id": first.queue_id, "domain": hop.host},
            )
        out: dict[int, DeliveryResult] = {}
        for i, job in group:
            rep = outcome.replies.get(job.rcpt.address) or smtp_out.Reply(451, ("4.4.2 no reply for this recipient",))
            diag = f"{rep}" + (f" (via {outcome.tls})" if outcome.tls and rep.code < 300 else "")
            if 200 <= rep.code < 300:
                out[i] = result(job, "delivered", rep.status, diag, outcome.host)
            elif rep.code >= 500 and rep.code != 552:
                out[i] = result(job, "bounced", rep.status, diag, outcome.host)
            else:  # 4xx, and 552 at RCPT (RFC 5321 §4.5.3.1.10)
                status = rep.status if rep.status.startswith("4") else "4.2.2"
                out[i] = result(job, "deferred", status, diag, outcome.host)
        await self._remember([(job, out[i]) for i, job in group if out[i].outcome == "delivered"])
        return first_carries(out, group, report)  # after _remember: a redelivered job never counts it again

    def _route(self, hop: NextHop, hosts: list[MxHost], group: list[tuple[int, DeliveryJob]], sts: StsPlan | None) -> tuple[list[MxHost], smtp_out.TlsPolicy] | dict[int, DeliveryResult]:
        """The hosts to try and the TLS policy; or, when none may be tried, the group's results: an
        enforced MTA-STS policy that allows none of the MX hosts (deferred 4.7.0), a REQUIRETLS message
        with no authenticated route (bounced 5.7.10). Needs no body."""
        first = group[0][1]
        tls = hop.tls or self.remote_cfg.tls
        if sts is not None and sts.tls is not None and not sts.hosts:
            mxs = ", ".join(h.host for h in hosts)
            text = f"451 4.7.0 MTA-STS policy of {hop.host} (enforce, id {sts.verdict.id}) allows none of its MX hosts ({mxs}): not delivered"
            log.warning("%s", text, extra={"queue_id": first.queue_id, "domain": hop.host})
            return first_carries({i: result(j, "deferred", "4.7.0", text) for i, j in group}, group, sts.report(None, []))
        if sts is not None:
            hosts, tls = sts.hosts, sts.tls or tls
        if first.requiretls:
            route = requiretls_route(hop, hosts, self.remote_cfg, sts)
            if isinstance(route, str):
                metrics.REQUIRETLS.labels("refused").inc()
                return {i: result(j, "bounced", "5.7.10", f"550 5.7.10 REQUIRETLS: {route}") for i, j in group}
            return route
        return hosts, tls

    async def _forwarded(self, group: list[tuple[int, DeliveryJob]], body: bytes) -> bytes | dict[int, DeliveryResult]:
        """A forwarded copy as it leaves (forwarding.py), or the results of the group that cannot leave."""
        first = group[0][1]
        try:
            return await self.forwarder.prepare(first, body)
        except LoopDetected as exc:
            return {i: result(j, "bounced", "5.4.6", f"554 5.4.6 forwarding loop: {exc}") for i, j in group}
        except KeysUnavailable as exc:
            log.warning("%s", exc, extra={"queue_id": first.queue_id})
            return {i: result(j, "deferred", "4.3.0", "451 4.3.0 ARC sealing key unavailable, will retry") for i, j in group}

    async def _remember(self, sent: list[tuple[DeliveryJob, DeliveryResult]]) -> None:
        got = await asyncio.gather(*(self.sent.put(j.idempotency_key, r) for j, r in sent), return_exceptions=True)
        for (job, _), g in zip(sent, got, strict=True):
            if isinstance(g, BaseException):
                log.error("could not record a sent message: %s", g, extra={"queue_id": job.queue_id})


def unreachable(hop: NextHop, group: list[tuple[int, DeliveryJob]], exc: smtp_out.Unreachable, sts: StsPlan | None) -> dict[int, DeliveryResult]:
    """The group's results when no host of `hop` took the transaction."""
    first = group[0][1]
    if first.requiretls and exc.status[1:4] == ".7.":  # no host met RFC 8689's terms: never deferred to try in clear
        metrics.REQUIRETLS.labels("refused").inc()
        status = "5.7.30" if exc.status == "5.7.30" else "5.7.10"
        return {i: result(j, "bounced", status, f"550 {status} REQUIRETLS: {hop} could not take it over authenticated TLS: {exc}", hop.host) for i, j in group}
    if hop.kind == "mx":
        if sts is not None and sts.tls is not None and sts.verdict.mode == "enforce" and exc.failures:
            status = "4.7.4" if all(f.result == "starttls-not-supported" for f in exc.failures) else "4.7.5"
            text = f"451 {status} MTA-STS policy of {hop.host} (enforce, id {sts.verdict.id}): no MX host could be used over verified TLS: {exc}"
            log.warning("%s", text[:500], extra={"queue_id": first.queue_id, "domain": hop.host})
            return {i: result(j, "deferred", status, text) for i, j in group}
        return {i: result(j, "deferred", exc.status, f"451 {exc.status} no MX of {hop.host} took the message: {exc}") for i, j in group}
    if hop.kind == "relay" and exc.status.startswith("4.7."):
        log.warning("the relay refused TLS or our login; check MAILFLOW_DELIVERY_RELAY_*: %s", exc, extra={"queue_id": first.queue_id})
    return {i: result(j, "deferred", exc.status, f"451 {exc.status} {hop} did not take the message: {exc}", hop.host) for i, j in group}


def first_carries(out: dict[int, DeliveryResult], group: list[tuple[int, DeliveryJob]], report: TlsReport | None) -> dict[int, DeliveryResult]:
    """The transaction's TLS report on the group's first result only: TLS-RPT counts sessions, not recipients."""
    if report is not None:
        i = group[0][0]
        out[i] = out[i].model_copy(update={"tls": report})
    return out


def tls_not_required(message: bytes) -> bool:
    """The message's header says `TLS-Required: No` (RFC 8689 §5): the first TLS-Required field (its name
    in any case) decides, its value unfolded, whitespace trimmed, "No" in any case. The header section is
    read as DKIM reads it (`dkim.split`: bare LF line ends too; a header over its MAX_HEADER octets is
    not looked into and says nothing)."""
    parsed = split(message)
    for name, value in parsed[0] if parsed is not None else []:
        if field_name(name) == b"tls-required":
            return value.replace(b"\r\n", b"").strip(b" \t").lower() == b"no"
    return False


def requiretls_route(hop: NextHop, hosts: list[MxHost], cfg: RemoteConfig, sts: StsPlan | None) -> tuple[list[MxHost], smtp_out.TlsPolicy] | str:
    """Where and how a REQUIRETLS message (RFC 8689 §4.2.1) may go over `hop`: STARTTLS (or the relay's
    implicit TLS) with a certificate that verifies for the host's name, to a host that offers REQUIRETLS
    (smtp_out checks); or why it cannot. A host the operator named (the relay, a transport map entry
    without MX lookup) is verified by that name. Names from an MX lookup must be validated too: by the
    domain's MTA-STS policy (its mx patterns; either mode) — DNSSEC is not asked, so without a policy
    the message bounces rather than trust the names."""
    if hop.lookup_mx:
        policy = sts.verdict.policy if sts is not None else None
        if hop.kind != "mx" or policy is None or policy.mode == "none":
            return f"the MX names of {hop.host} cannot be validated (no MTA-STS policy; DNSSEC is not used)"
        allowed = [h for h in hosts if policy.allows(h.host)]
        if not allowed:
            return f"no MX host of {hop.host} is in its MTA-STS policy"
        return allowed, dataclasses.replace(cfg.sts_tls, fallback=None)
    if hop.tls is None:  # a map entry: verified by the entry's name
        return hosts, smtp_out.TlsPolicy("require", cfg.sts_tls.context, hop.host)
    ctx = hop.tls.context
    if hop.tls.mode not in ("require", "implicit") or ctx is None or ctx.verify_mode != ssl.CERT_REQUIRED:
        return f"{hop} is not set to TLS with a verified certificate"
    return hosts, hop.tls


Publish = Callable[[list[DeliveryResult], list[TraceEvent]], Awaitable[None]]


_RANK = {"delivered": 0, "bounced": 1, "deferred": 2}


def _worst(out: dict[int, DeliveryResult], i: int, r: DeliveryResult) -> None:
    """A job Sieve made several items of has one result: deferred if any copy was, else bounced if any
    was, else delivered (a retried job stores again only the copies that were not stored: their keys)."""
    have = out.get(i)
    if have is None or _RANK.get(r.outcome, 2) > _RANK.get(have.outcome, 2):
        out[i] = r
