"""A recipient domain's MTA-STS policy (RFC 8461): discovered, fetched, cached, and what it asks of a delivery.

Discovery (§3): the `_mta-sts.<domain>` TXT record through the resolver service (`DnsLookup`), then
`https://mta-sts.<domain>/.well-known/mta-sts.txt`: the name's A/AAAA through the resolver too, a
TLS connection to that address made here with SNI and a certificate that must verify for
mta-sts.<domain> (the system's CAs plus MAILFLOW_DELIVERY_TLS_CA_FILE), HTTP/1.0 (no chunked
encoding), status 200 only (no redirect is followed, §3.3), text/plain, at most 64 KiB, the whole
fetch within `timeout`. Every line and header read is bounded; nothing is parsed with a regex.

Cache (§5.1): per domain, in memory and in the KV bucket DELIVERY_MTA_STS (so a restart of delivery
keeps using the policies it had), each until its max_age passes. Asked for a domain's policy,
`Policies.get` looks at the TXT record (the resolver caches it for its TTL) and fetches again only
when the id differs from the cached policy's, or when nothing unexpired is cached.

Failures, and what they lead to (the `Verdict`'s `problem` names them with RFC 8460 result types):
  TXT lookup fails (temp_fail)               -> the cached policy; none cached: no policy
                                               (§3: not a delivery failure), sts-policy-fetch-error
  no v=STSv1 TXT record                      -> the cached policy (§5.1, §10.2); else no policy
  TXT malformed, or more than one v=STSv1    -> the cached policy; else no policy, sts-policy-invalid
  fetch fails (DNS, connection, TLS, HTTP)   -> the cached policy; else no policy, sts-policy-fetch-error
                                               (sts-webpki-invalid when the certificate did not verify)
  policy file does not parse                 -> the same, sts-policy-invalid
A failed fetch of one (domain, id) is not tried again for `retry_after` seconds. The KV bucket
unreadable or unwritable: the memory cache alone (a WARNING says so), never a deferral.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailflow import mtasts
from mailflow.authn import DnsLookup
from mailflow.cache import Cache, SingleFlight
from mailflow.contracts.messages import TlsFailureDetail, TlsReport
from mailflow.contracts.streams import STS_POLICY_BUCKET
from mailflow.mtasts import Policy, PolicyError
from mailflow_delivery import metrics

log = logging.getLogger(__name__)

MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
MAX_ADDRESSES = 4  # of mta-sts.<domain>, tried in turn


class FetchError(Exception):
    """The policy could not be had; `.result` is its RFC 8460 result type."""

    def __init__(self, message: str, result: str = "sts-policy-fetch-error"):
        super().__init__(message)
        self.result = result


def verifying_context(cafile: str | None) -> ssl.SSLContext:
    """Certificates checked against the system's CAs and, when given, the CAs of `cafile` too."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        ctx.load_verify_locations(cafile)
    return ctx


async def _get(address: str, port: int, host: str, ctx: ssl.SSLContext) -> bytes:
    """One HTTPS GET of the policy from one address: the body, or FetchError."""
    try:
        r, w = await asyncio.open_connection(address, port, ssl=ctx, server_hostname=host, limit=MAX_HEADER_LINE)
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"{host}[{address}]: certificate: {exc.verify_message}", "sts-webpki-invalid") from exc
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"{host}[{address}]:{port}: {type(exc).__name__} {exc}") from exc
    try:
        w.write(f"GET {mtasts.WELL_KNOWN} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\nUser-Agent: mailflow\r\nConnection: close\r\n\r\n".encode())
        return await read_response(r, host)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        raise FetchError(f"{host}: {type(exc).__name__} {exc}") from exc
    finally:
        w.close()


async def read_response(r: asyncio.StreamReader, host: str) -> bytes:
    """The body of an HTTP/1.x response that must be `200`, text/plain, at most 64 KiB, not chunked;
    FetchError otherwise. `r`'s limit bounds each status and header line (MAX_HEADER_LINE)."""
    try:
        status = (await r.readline()).decode("latin-1").rstrip("\r\n")
        version, _, rest = status.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
            raise FetchError(f"{host}: not an HTTP response: {status[:80]!r}")
        if code != "200":
            why = " (redirects are not followed, RFC 8461 §3.3)" if code.startswith("3") else ""
            raise FetchError(f"{host}: HTTP {rest[:80]}{why}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = (await r.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise FetchError(f"{host}: more than {MAX_HEADERS} header lines")
    except ValueError as exc:  # a line over the reader's limit
        raise FetchError(f"{host}: a status or header line over {MAX_HEADER_LINE} bytes") from exc
    ctype = headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "text/plain":
        raise FetchError(f"{host}: Content-Type {ctype[:40] or '(none)'!r}, not text/plain", "sts-policy-invalid")
    if "transfer-encoding" in headers:
        raise FetchError(f"{host}: Transfer-Encoding in an HTTP/1.0 response")
    length = headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 12):
        raise FetchError(f"{host}: Content-Length {length[:20]!r}")
    if length is not None and int(length) > mtasts.MAX_POLICY_BYTES:
        raise FetchError(f"{host}: policy of {length} bytes: at most {mtasts.MAX_POLICY_BYTES}", "sts-policy-invalid")
    body = b""
    while chunk := await r.read(mtasts.MAX_POLICY_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > mtasts.MAX_POLICY_BYTES:
            raise FetchError(f"{host}: policy over {mtasts.MAX_POLICY_BYTES} bytes", "sts-policy-invalid")
    if length is not None and len(body) != int(length):
        raise FetchError(f"{host}: {len(body)} of {length} bytes before the connection closed")
    return body


async def fetch(domain: str, dns: DnsLookup, ctx: ssl.SSLContext, port: int = 443, timeout: float = 10.0) -> bytes:
    """The policy file of `domain` (its bytes, unparsed), or FetchError."""
    host = f"mta-sts.{domain}"
    addresses: list[str] = []
    errors: list[str] = []
    for rdtype in ("A", "AAAA"):
        answer = await dns.query(host, rdtype)
        addresses += answer.records if answer.status == "ok" else []
        if answer.status == "temp_fail":
            errors.append(f"{host} {rdtype}: {answer.error or 'temporary failure'}")
    if not addresses:
        raise FetchError("; ".join(errors) or f"{host} has no address")
    last: FetchError | None = None
    for address in addresses[:MAX_ADDRESSES]:
        try:
            async with asyncio.timeout(timeout):
                return await _get(address, port, host, ctx)
        except TimeoutError:
            last = FetchError(f"{host}[{address}]: no policy within {timeout:.0f}s")
        except FetchError as exc:
            last = exc
    assert last is not None
    raise last


@dataclass(frozen=True)
class Cached:
    """A domain's policy as fetched: its TXT id and when (wall clock: it outlives a restart)."""

    id: str
    policy: Policy
    fetched: float

    @property
    def expires(self) -> float:
        return self.fetched + self.policy.max_age

    def to_bytes(self, domain: str) -> bytes:
        return json.dumps({"domain": domain, "id": self.id, "policy": self.policy.text(), "fetched": self.fetched}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Cached:
        d = json.loads(data)
        return cls(d["id"], mtasts.parse_policy(d["policy"].encode()), float(d["fetched"]))


class PolicyStore(Protocol):
    async def get(self, domain: str) -> bytes | None: ...
    async def put(self, domain: str, value: bytes) -> None: ...


class KvPolicyStore:
    """The KV bucket DELIVERY_MTA_STS (the queue creates it), keyed by a hash of the domain."""

    def __init__(self, kv):
        self.kv = kv

    @classmethod
    async def open(cls, js) -> KvPolicyStore:
        return cls(await js.key_value(STS_POLICY_BUCKET))

    @staticmethod
    def _key(domain: str) -> str:
        return hashlib.sha256(domain.encode()).hexdigest()

    async def get(self, domain: str) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(self._key(domain))
        except KeyNotFoundError:
            return None
        return entry.value or None

    async def put(self, domain: str, value: bytes) -> None:
        await self.kv.put(self._key(domain), value)


class MemoryPolicyStore:
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    async def get(self, domain: str) -> bytes | None:
        return self.items.get(domain)

    async def put(self, domain: str, value: bytes) -> None:
        self.items[domain] = value


@dataclass(frozen=True)
class Verdict:
    """The policy a delivery to `domain` follows now (None: none), and what went wrong finding it."""

    domain: str
    policy: Policy | None = None
    id: str = ""
    problem: TlsFailureDetail | None = None

    @property
    def mode(self) -> str:
        return self.policy.mode if self.policy else "none"

    def report(self, success: bool = True, failures: list[TlsFailureDetail] = ()) -> TlsReport:  # type: ignore[assignment]
        found = [self.problem] if self.problem else []
        if self.policy is None:  # what TLS the session had all the same (a session in clear: a failure)
            return TlsReport(policy_domain=self.domain, policy_type="no-policy-found", success=success, failures=[*found, *failures])
        return TlsReport(
            policy_domain=self.domain,
            policy_type="sts",
            policy_mode=self.policy.mode,
            policy_id=self.id,
            mx=list(self.policy.mx),
            policy_strings=self.policy.text().split("\r\n")[:-1],
            success=success,
            failures=[*found, *failures],
        )


class Policies:
    """Recipient domains' policies, one lookup at a time per domain (concurrent deliveries share it)."""

    def __init__(
        self,
        dns: DnsLookup,
        store: PolicyStore,
        ctx: ssl.SSLContext,
        port: int = 443,
        timeout: float = 10.0,
        retry_after: float = 300.0,
        size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ):
        self.dns, self.store, self.ctx, self.port, self.timeout = dns, store, ctx, port, timeout
        self.retry_after, self.clock = retry_after, clock
        self.known: Cache[str, Cached | None] = Cache(size, clock)  # None: the store has nothing for it
        self.failed: Cache[tuple[str, str], TlsFailureDetail] = Cache(size, clock)
        self._flights: SingleFlight[str, Verdict] = SingleFlight()
        self.fetches = 0  # HTTPS fetches made (tests and the log read it)

    async def get(self, domain: str) -> Verdict:
        return await self._flights.run(domain, lambda: self._get(domain))

    async def _cached(self, domain: str) -> Cached | None:
        now = self.clock()
        hit = self.known.get(domain, False)
        if hit is False:
            hit = None
            try:
                raw = await self.store.get(domain)
                hit = Cached.from_bytes(raw) if raw else None
            except Exception as exc:  # unreadable bucket or entry: as if nothing were cached
                log.warning("MTA-STS policy cache unreadable: %s", exc, extra={"domain": domain})
            self.known.put(domain, hit, (hit.expires - now) if hit else 3600.0)
        return hit if hit is not None and hit.expires > now else None

    async def _get(self, domain: str) -> Verdict:
        cached = await self._cached(domain)

        def keep(problem: TlsFailureDetail | None) -> Verdict:
            if cached is not None:
                return Verdict(domain, cached.policy, cached.id, problem)
            return Verdict(domain, problem=problem)

        name = f"_mta-sts.{domain}"
        txt = await self.dns.query(name, "TXT")
        if txt.status == "temp_fail":
            return keep(TlsFailureDetail(result_type="sts-policy-fetch-error", detail=f"{name} TXT: {txt.error or 'temporary failure'}"))
        try:
            pid = mtasts.parse_txt(txt.records) if txt.status == "ok" else None
        except PolicyError as exc:
            return keep(TlsFailureDetail(result_type=exc.result, detail=f"{name} TXT: {exc}"))
        if pid is None or (cached is not None and cached.id == pid):
            return keep(None)
        problem = self.failed.get((domain, pid))
        if problem is not None:
            return keep(problem)
        self.fetches += 1
        try:
            body = await fetch(domain, self.dns, self.ctx, self.port, self.timeout)
            policy = mtasts.parse_policy(body)
        except (FetchError, PolicyError) as exc:
            metrics.STS_FETCHES.labels(exc.result).inc()
            problem = TlsFailureDetail(result_type=exc.result, receiving_mx_hostname="", detail=f"policy id {pid}: {exc}"[:500])
            log.warning("MTA-STS policy not fetched: %s", problem.detail, extra={"domain": domain, "result": exc.result, "cached": cached is not None})
            self.failed.put((domain, pid), problem, self.retry_after)
            return keep(problem)
        metrics.STS_FETCHES.labels("ok").inc()
        entry = Cached(pid, policy, self.clock())
        self.known.put(domain, entry, policy.max_age)
        try:
            await self.store.put(domain, entry.to_bytes(domain))
        except Exception as exc:
            log.warning("MTA-STS policy cache not written: %s", exc, extra={"domain": domain})
        log.info("MTA-STS policy fetched", extra={"domain": domain, "id": pid, "mode": policy.mode, "max_age": policy.max_age})
        return Verdict(domain, policy, pid)
