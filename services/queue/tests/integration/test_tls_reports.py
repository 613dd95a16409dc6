"""TLS-RPT through the queue (RFC 8460): delivery's sessions, on its results, are added up per day in the
results transaction (once: a redelivered result is not counted again); the next day the scheduler asks
each domain's `_smtp._tls` record — a DNS server the test starts, through the resolver's own lookup code
— and sends the report as mail (null sender, DKIM-signed on the way out) to the record's address; a
domain without a record gets none, and nothing is sent twice."""

from __future__ import annotations

import base64
import email
import gzip
import json
from datetime import UTC, datetime

import sqlalchemy as sa

from mailflow.contracts.messages import DeliveryResult, TlsFailureDetail, TlsReport
from mailflow_queue import tls_counts
from mailflow_queue.db import TlsCount, TlsDecision
from mailflow_queue.scheduler import TLS_REPORT_CHECK_S, TlsReporting
from mailflow_resolver.app import build_resolvers
from mailflow_resolver.settings import Settings as ResolverSettings
from services.queue.tests.integration.test_flow import answer_batch, submit
from tests.support.dns import DnsServer

ZONE = '_smtp._tls.naver.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"\n'


def done(parts, qid: str, rcpt: str, tls: TlsReport | None = None) -> DeliveryResult:
    at = datetime.fromtimestamp(parts.clock.now, UTC)
    return DeliveryResult(queue_id=qid, rcpt=rcpt, attempt=1, outcome="delivered", status="2.0.0", at=at, tls=tls)


async def test_sessions_are_counted_once_and_reported_the_next_day(parts):
    await submit(parts, "QT1", ["a@naver.test", "b@naver.test"])
    await submit(parts, "QT2", ["c@other.test"])
    await parts.intake.run_until_idle()
    await parts.jobs(expect=3)
    plain = TlsFailureDetail(result_type="starttls-not-supported", receiving_mx_hostname="mx2.naver.test", receiving_ip="127.0.0.4")
    report = TlsReport(policy_domain="naver.test", policy_type="no-policy-found", success=True, failures=[plain])
    first = done(parts, "QT1", "a@naver.test", report)  # mx2 had no STARTTLS; mx took it over TLS
    other = TlsReport(policy_domain="other.test", policy_type="no-policy-found")
    await answer_batch(parts, first, done(parts, "QT1", "b@naver.test"), done(parts, "QT2", "c@other.test", other))
    await parts.results.run_until_idle()
    await answer_batch(parts, first)  # the same result again (a redelivery): stale, not counted
    await parts.results.run_until_idle()

    with DnsServer(ZONE) as dns:
        _, queries = build_resolvers(ResolverSettings(service_token="t", nameservers=dns.address, timeout=2, lifetime=4))
        parts.scheduler.tls_reports = TlsReporting(queries, "tls@daum.test", "Mailflow at mx.daum.test")
        await parts.scheduler.tick()  # the day is not over: nothing due, DNS not asked
        assert dns.queries == [] and await parts.intake.run_until_idle() == 0

        parts.clock.now += 86400
        await parts.scheduler.tick()
        assert sorted(name for name, _ in dns.queries) == ["_smtp._tls.naver.test", "_smtp._tls.other.test"]
        assert await parts.intake.run_until_idle() == 1
        ((job, _),) = await parts.jobs(expect=1)
        assert (job.mail_from, job.rcpt.address, job.dkim) == ("", "tlsrpt@reports.test", True)
        m = email.message_from_bytes(job.body)
        assert m["From"] == "<tls@daum.test>" and m["TLS-Report-Domain"] == "naver.test"
        (_, attached) = m.get_payload()
        got = json.loads(gzip.decompress(base64.b64decode(attached.get_payload())))
        ((policy,),) = [got["policies"]]
        assert policy["policy"] == {"policy-type": "no-policy-found", "policy-domain": "naver.test"}
        assert policy["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 1}
        assert policy["failure-details"] == [
            {"result-type": "starttls-not-supported", "failed-session-count": 1, "receiving-mx-hostname": "mx2.naver.test", "receiving-ip": "127.0.0.4"}
        ]
        decided = parts.db.call(lambda s: {r.policy_domain: r.outcome for r in s.scalars(sa.select(TlsDecision))})
        assert decided == {"naver.test": "sent to tlsrpt@reports.test", "other.test": "no record"}

        asked = len(dns.queries)
        parts.clock.now += TLS_REPORT_CHECK_S + 1
        await parts.scheduler.tick()  # decided: never again
        assert len(dns.queries) == asked and await parts.intake.run_until_idle() == 0


def test_twin_rows_of_two_queue_processes_are_added_up(parts):
    """Two replicas' results transactions adding the same new key at once both insert it."""
    key = dict(day="2027-01-14", policy_domain="naver.test", policy_type="sts", policy_string="version: STSv1", mx_host="", sending_ip="", receiving_ip="", detail="")

    def insert(s):
        s.add_all([TlsCount(**key, result="success", sessions=2), TlsCount(**key, result="success", sessions=3)])
        s.add(TlsCount(**key, result="certificate-expired", sessions=1))

    parts.db.call(insert)
    counts = parts.db.call(tls_counts.rows, "2027-01-14", "naver.test")
    assert [(c.result, c.sessions) for c in counts] == [("success", 5), ("certificate-expired", 1)]
