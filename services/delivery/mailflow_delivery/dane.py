"""DANE for SMTP (RFC 7672): the TLSA records of an MX host, and whether its certificate matches them.

Before a next hop's hosts are tried, `Dane.rules` decides each host's TLS terms (RFC 7672 §2.2):
  host not secure (MxHost.secure False: the MX answer   -> no rule: opportunistic TLS as always
  or the host's addresses not DNSSEC-authenticated)
  TLSA `_<port>._tcp.<host>` temp_fail (SERVFAIL: what  -> the host is skipped when its turn comes, never
  a validating resolver answers for bogus data too)       tried in clear (dnssec-invalid); none left: 4.7.5
  TLSA nxdomain or nodata, or an answer not secure      -> no rule: opportunistic TLS
  secure TLSA with usable records                       -> STARTTLS mandatory (not offered: 4.7.4,
                                                           starttls-not-supported); the certificate must
                                                           match a record (else 4.7.5, validation-failure)
  secure TLSA with no usable record                     -> STARTTLS mandatory, not authenticated
                                                           (RFC 7672 §2.2; recorded as tlsa-invalid)
A host that fails its rule is left for the next MX host; when none takes the message it is deferred and
the queue bounces it at its normal lifetime. The rule knows nothing of the host's name or of CAs: the
TLS context does no PKIX check and no host name check (DANE-EE ignores both, RFC 7672 §3.1.1); the
match is checked after the handshake, before the second EHLO and before any MAIL.

Usable records (RFC 7672 §3.1): DANE-EE (usage 3) with selector 0 (the whole certificate) or 1 (its
SubjectPublicKeyInfo) and matching type 0 (exact), 1 (SHA-256, 32 octets) or 2 (SHA-512, 64 octets).
Not usable: DANE-TA (2), because Python's ssl (3.11) gives the client only the server's leaf
certificate (`getpeercert(binary_form=True)`), never the chain it sent, so a trust anchor in the chain
cannot be checked; PKIX-TA and PKIX-EE (0, 1), which RFC 7672 §3.1.3 says SMTP clients do not use;
other selectors and matching types; a record that does not parse or whose digest has the wrong length.
What a selector and matching type make of the certificate is `mailflow.tlsa`'s, the same rule
`mailflow dns records` prints our own record by; a certificate whose SubjectPublicKeyInfo it cannot
read matches no selector-1 record, and the failure says why.

Each outcome, named as RFC 8460 (TLS-RPT) names result types (a skipped host, each attempt: `HostTls`
says what smtp_out calls back), is counted in mailflow_delivery_dane_total{result} and logged when it
is not a success. Its one record is smtp_out's: the failures (tlsa-invalid aside, a session that went
out over TLS as RFC 7672 asks) are failure details of the attempt's TLS report (DeliveryResult.tls),
which the queue adds up for TLS-RPT.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from dataclasses import dataclass

from mailflow import tls, tlsa
from mailflow.authn import DnsLookup
from mailflow.contracts.messages import MxHost
from mailflow_delivery import metrics, smtp_out

log = logging.getLogger(__name__)

# RFC 8460 §4.3 result types (and "success"): the closed set of the metric's label
RESULTS = ("success", "tlsa-invalid", "dnssec-invalid", "starttls-not-supported", "validation-failure")
DIGEST_LENGTH = {0: None} | {t: d().digest_size for t, d in tlsa.DIGESTS.items()}  # matching type -> octets of the data (0: any)
MAX_DER = 64 * 1024  # a leaf certificate is a few KiB: a longer one is refused, never hashed


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}{'...' if len(self.data) > 8 else ''}"


def parse(text: str) -> Tlsa | str:
    """A TLSA record as `DnsAnswer.records` has it ("3 1 1 <hex>"), or why it cannot be one."""
    fields = text.split()
    if len(fields) != 4:
        return f"not a TLSA record: {text[:40]!r}"
    numbers = fields[:3]
    if not all(f.isascii() and f.isdigit() and len(f) <= 3 and int(f) < 256 for f in numbers):
        return f"TLSA fields not numbers 0-255: {' '.join(numbers)[:20]!r}"
    try:
        data = bytes.fromhex(fields[3])
    except ValueError:
        return f"TLSA data not hex: {fields[3][:20]!r}"
    return Tlsa(int(numbers[0]), int(numbers[1]), int(numbers[2]), data)


def unusable(record: Tlsa) -> str | None:
    """Why Mailflow cannot use `record` (see the module's docstring), or None."""
    if record.usage != 3:
        return f"usage {record.usage} not supported (DANE-EE, 3, only)"
    if record.selector not in (0, 1):
        return f"selector {record.selector} unknown"
    if record.mtype not in DIGEST_LENGTH:
        return f"matching type {record.mtype} unknown"
    length = DIGEST_LENGTH[record.mtype]
    if (length is not None and len(record.data) != length) or not record.data:
        return f"data of {len(record.data)} octets for matching type {record.mtype}"
    return None


def matches(records: list[Tlsa], cert: bytes) -> Tlsa | str:
    """The first of the usable `records` that `cert` (DER) matches, or why none does."""
    selected: dict[int, bytes | str] = {}  # selector -> the octets it takes, or why it takes none
    for r in records:
        if r.selector not in selected:
            try:
                selected[r.selector] = tlsa.select(cert, r.selector)
            except tlsa.BadCertificate as exc:
                selected[r.selector] = f"its SubjectPublicKeyInfo could not be read: {exc}"
        octets = selected[r.selector]
        if isinstance(octets, bytes) and hmac.compare_digest(tlsa.digest(octets, r.mtype), r.data):
            return r
    unread = [why for why in selected.values() if isinstance(why, str)]
    return f"matches none of its TLSA records{''.join(f'; {why}' for why in unread)}"


def tlsa_name(port: int, host: str) -> str:
    return f"_{port}._tcp.{host}"  # RFC 7672 §2.3: the TLSA base domain is the MX host name


class Dane:
    """The per-host rules of a next hop's hosts. `dns`: the resolver service (`mailflow.dns.DnsClient`)."""

    def __init__(self, dns: DnsLookup):
        self.dns = dns
        self.context = tls.client_context(verify=False)  # no PKIX, no name: the TLSA match decides

    @staticmethod
    def count(domain: str, host: str, address: str, result: str, detail: str) -> None:
        """One outcome (`address` "" for a host not tried) in the metric, and the log when not a success."""
        metrics.DANE.labels(result).inc()
        if result != "success":
            log.warning("DANE %s: %s", result, detail, extra={"mx": host, "address": address, "domain": domain})

    async def rules(self, domain: str, hosts: list[MxHost], port: int) -> dict[str, smtp_out.HostTls]:
        """Host name -> its TLS terms, for the hosts DANE applies to (see the module's docstring)."""
        secure = [h.host for h in hosts if h.secure]
        if not secure:
            return {}
        answers = await asyncio.gather(*(self.dns.query(tlsa_name(port, h), "TLSA") for h in secure))
        out: dict[str, smtp_out.HostTls] = {}
        for host, answer in zip(secure, answers, strict=True):
            if answer.status == "temp_fail":
                why = f"DANE: TLSA lookup for {tlsa_name(port, host)} failed ({answer.error or 'temporary'}); not tried without it"
                out[host] = smtp_out.HostTls(skip=("dnssec-invalid", why), record=functools.partial(self.count, domain, host))
            elif answer.status == "ok" and answer.secure:
                out[host] = self._rule(domain, host, answer.records)
        return out

    def _rule(self, domain: str, host: str, texts: list[str]) -> smtp_out.HostTls:
        usable: list[Tlsa] = []
        refused: list[str] = []
        for text in texts:
            record = parse(text)
            if isinstance(record, str):
                refused.append(record)
            elif (why := unusable(record)) is not None:
                refused.append(why)
            else:
                usable.append(record)

        def record(address: str, result: str, detail: str) -> None:
            if result == "success" and not usable:
                result, detail = "tlsa-invalid", f"no usable TLSA record ({'; '.join(refused)[:300]}): sent encrypted, not authenticated"
            self.count(domain, host, address, result, detail)

        def verify(cert: bytes | None) -> tuple[str, str] | None:
            if not usable:
                return None
            if cert is None or len(cert) > MAX_DER:
                return "validation-failure", "DANE: the server showed no certificate"
            found = matches(usable, cert)
            if isinstance(found, str):
                shown = ", ".join(str(r) for r in usable[:4])
                return "validation-failure", f"DANE: the certificate of {host} {found} ({shown})"[:500]
            return None

        note = "DANE-EE verified" if usable else "DANE: encrypted, not authenticated (no usable TLSA record)"
        return smtp_out.HostTls(context=self.context, verify=verify, record=record, note=note)
