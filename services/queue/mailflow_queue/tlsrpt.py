"""TLS-RPT (RFC 8460): the daily aggregate report of the TLS sessions delivery opened to a domain's MX.

Pure: no I/O, no clock. Delivery says what TLS became of each session (DeliveryResult.tls); the queue
adds them up per UTC day and domain in the results transaction (ledger.apply_results -> table
tls_counts). After the day, the scheduler asks the domain's `_smtp._tls` TXT record and, when it has
`mailto:` addresses, sends each the report: `report` is its JSON (§4), `message` the mail (§5.3:
multipart/report; report-type="tlsrpt", the JSON gzipped, TLS-Report-Domain and -Submitter fields).
`https:` addresses are not posted to (yet): a domain that gives only those gets no report.
"""

from __future__ import annotations

import base64
import gzip
import json
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime

MAX_RUA = 5  # report addresses taken from one record; the rest are ignored
MAX_RECORD = 2048  # octets of the TXT record read


@dataclass(frozen=True)
class Count:
    """One row of tls_counts: sessions of one day with the same policy, hosts and result."""

    policy_type: str
    policy_string: str  # the policy's lines joined by "\n"; "" when none
    mx_host: str
    receiving_ip: str
    result: str
    detail: str
    sessions: int


def parse_record(records: list[str]) -> list[str] | None:
    """The `mailto:` addresses of a domain's `_smtp._tls` TXT records (RFC 8460 §3), None when there is no
    usable record: none or several starting `v=TLSRPTv1`, or one without a `rua`."""
    ours = [r[:MAX_RECORD] for r in records if r[:MAX_RECORD].replace(" ", "").startswith("v=TLSRPTv1;")]
    if len(ours) != 1:
        return None
    rua = None
    for field in ours[0].split(";")[1:]:
        name, eq, value = field.strip().partition("=")
        if eq and name.strip() == "rua":
            rua = value.strip()
    if not rua:
        return None
    out: list[str] = []
    for uri in rua.split(",")[: 2 * MAX_RUA]:
        scheme, colon, rest = uri.strip().partition(":")
        if not colon or scheme.lower() != "mailto":
            continue
        address = urllib.parse.unquote(rest.split("?", 1)[0])
        if _plain_address(address):
            out.append(address)
    return out[:MAX_RUA]


_LOCAL_SPECIALS = set('<>()[]\\,;:"@')


def _plain_address(address: str) -> bool:
    """local@domain in printable ASCII, nothing that could end a header field or an angle address."""
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or len(address) > 254:
        return False
    if any(not (32 < ord(ch) < 127) or ch in _LOCAL_SPECIALS for ch in local):
        return False
    labels = domain.split(".")
    return all(label and len(label) <= 63 and all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in label) for label in labels)


def day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0, 0), UTC)
    return start, start + timedelta(days=1) - timedelta(seconds=1)


def report(counts: list[Count], day: date, domain: str, organization: str, contact: str, report_id: str) -> dict:
    """The report of §4: one entry per policy applied, with its success and failure totals and the
    failures by result type and hosts."""
    start, end = day_range(day)
    policies: dict[tuple[str, str], list[Count]] = defaultdict(list)
    for c in counts:
        policies[(c.policy_type, c.policy_string)].append(c)
    entries = []
    for (ptype, pstring), rows in sorted(policies.items()):
        policy: dict = {"policy-type": ptype, "policy-domain": domain}
        if pstring:
            policy["policy-string"] = pstring.split("\n")
        if ptype == "sts":
            policy["mx-host"] = [line[3:].strip() for line in pstring.split("\n") if line.startswith("mx:")]
        elif ptype == "tlsa":
            policy["mx-host"] = sorted({r.mx_host for r in rows})
        ok = sum(r.sessions for r in rows if r.result == "success")
        failed = [r for r in rows if r.result != "success"]
        entry: dict = {
            "policy": policy,
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": sum(r.sessions for r in failed)},
        }
        if failed:
            entry["failure-details"] = [_failure(r) for r in sorted(failed, key=lambda r: (r.result, r.mx_host, r.receiving_ip))]
        entries.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _iso(start), "end-datetime": _iso(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": entries,
    }


def _failure(c: Count) -> dict:
    out = {"result-type": c.result, "failed-session-count": c.sessions}
    if c.mx_host:
        out["receiving-mx-hostname"] = c.mx_host
    if c.receiving_ip:
        out["receiving-ip"] = c.receiving_ip
    if c.detail:
        out["additional-information"] = c.detail
    return out


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def message(body: dict, day: date, domain: str, submitter: str, sender: str, to: str, message_id: str, now: datetime) -> bytes:
    """The report as mail (§5.3), CRLF line ends, ASCII only."""
    start, end = day_range(day)
    name = f"{submitter}!{domain}!{int(start.timestamp())}!{int(end.timestamp())}.json.gz"
    data = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    boundary = f"tlsrpt-{message_id.split('@', 1)[0]}"
    head = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Date: {format_datetime(now)}",
        f"Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{body['report-id']}>",
        f"Message-ID: <{message_id}>",
        f"TLS-Report-Domain: {domain}",
        f"TLS-Report-Submitter: {submitter}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
    ]
    text = (
        f"This is an aggregate TLS report from {submitter} (RFC 8460) about the mail it sent to {domain}\r\n"
        f"from {_iso(start)} to {_iso(end)}: the JSON report is attached, gzipped.\r\n"
    )
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}",
        f"--{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{encoded}',
        f"--{boundary}--\r\n",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + "".join(parts)).encode("ascii")
