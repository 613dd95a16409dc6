"""TLS-RPT's database side: sessions added up per day (in the results transaction), the days and
domains whose report is due, and what became of each report. tlsrpt.py makes the report itself."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow.contracts.messages import DeliveryResult
from mailflow_queue.db import TlsCount, TlsDecision
from mailflow_queue.tlsrpt import Count

KEEP_DAYS = 7  # counts older than this are deleted, reported or not

_KEY = ("day", "policy_domain", "policy_type", "policy_string", "mx_host", "receiving_ip", "result", "detail")


def count(s: Session, results: list[DeliveryResult]) -> int:
    """Add the results' TLS reports to their day's rows: a success is one session of its policy, each
    failure one failed session with its hosts; the number of sessions counted. Two queue processes
    adding a new key at once both insert it: `rows` adds such twins up."""
    sessions: Counter[tuple] = Counter()
    for res in results:
        t = res.tls
        if t is None:
            continue
        day = res.at.astimezone(UTC).date().isoformat()
        policy = (day, t.policy_domain[:255], t.policy_type, "\n".join(t.policy_strings))
        if t.success:
            sessions[(*policy, "", "", "success", "")] += 1
        for f in t.failures:
            sessions[(*policy, f.receiving_mx_hostname[:255], f.receiving_ip[:64], f.result_type[:40], f.detail[:200])] += 1
    for key, n in sorted(sessions.items()):  # one lock order for every replica
        where = [getattr(TlsCount, c) == v for c, v in zip(_KEY, key, strict=True)]
        done = s.execute(sa.update(TlsCount).where(*where).values(sessions=TlsCount.sessions + n))
        if not done.rowcount:
            s.add(TlsCount(**dict(zip(_KEY, key, strict=True)), sessions=n))
    return sum(sessions.values())


def due(s: Session, today: date, limit: int = 100) -> list[tuple[str, str]]:
    """(day, domain) pairs before `today` with sessions and no report decided yet."""
    decided = sa.select(TlsDecision.id).where(TlsDecision.day == TlsCount.day, TlsDecision.policy_domain == TlsCount.policy_domain)
    q = (
        sa.select(TlsCount.day, TlsCount.policy_domain)
        .where(TlsCount.day < today.isoformat(), ~decided.exists())
        .group_by(TlsCount.day, TlsCount.policy_domain)
        .order_by(TlsCount.day, TlsCount.policy_domain)
        .limit(limit)
    )
    return [(d, p) for d, p in s.execute(q)]


def rows(s: Session, day: str, domain: str) -> list[Count]:
    cols = [TlsCount.policy_type, TlsCount.policy_string, TlsCount.mx_host, TlsCount.receiving_ip, TlsCount.result, TlsCount.detail]
    q = (
        sa.select(*cols, sa.func.sum(TlsCount.sessions))
        .where(TlsCount.day == day, TlsCount.policy_domain == domain)
        .group_by(*cols)
        .order_by(sa.func.min(TlsCount.id))
    )
    return [Count(*row[:-1], int(row[-1])) for row in s.execute(q)]


def decide(s: Session, day: str, domain: str, outcome: str, now: float) -> None:
    s.add(TlsDecision(day=day, policy_domain=domain, outcome=outcome[:255], at=now))


def purge(s: Session, today: date) -> None:
    before = (today - timedelta(days=KEEP_DAYS)).isoformat()
    s.execute(sa.delete(TlsCount).where(TlsCount.day < before))
    s.execute(sa.delete(TlsDecision).where(TlsDecision.day < before))


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()
