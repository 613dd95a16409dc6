"""The live pipeline's arithmetic: per-stage rates from trace events, latency, errors from /metrics text,
the hour's per-minute history, bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime

from mailflow.contracts.messages import TraceEvent
from mailflow_web import pipeline as p
from mailflow_web.pipeline import Pipeline, errors_in

T0 = 1_800_000_000.0


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def event(qid: str, step: str, at: float, ms: float = 0.0) -> TraceEvent:
    return TraceEvent(queue_id=qid, trace_id="t", step=step, service="x", at=datetime.fromtimestamp(at, UTC), duration_ms=ms)


def test_rates_and_latency_from_trace_events():
    clock = Clock()
    pl = Pipeline({}, None, clock)
    for i in range(10):
        pl.record(event(f"Q{i}", "ingress", T0 - 2, ms=1000))  # began at T0 - 3
        pl.record(event(f"Q{i}", "mailbox", T0))
    snap = pl.snapshot()
    rates = {s["step"]: s["rate"] for s in snap["stages"]}
    assert rates["ingress"] == 2.0 and rates["mailbox"] == 2.0 and rates["delivery"] == 0.0  # 10 in 5 s
    assert snap["latency_s"] == 3.0
    clock.now += 6
    assert {s["step"]: s["rate"] for s in pl.snapshot()["stages"]}["ingress"] == 0.0


def test_history_has_sixty_minutes_and_forgets_the_hour_before():
    clock = Clock()
    pl = Pipeline({}, None, clock)
    for _ in range(120):
        pl.record(event("Q", "ingress", T0))
    minutes = pl.snapshot(history=True)["history"]["minutes"]
    assert len(minutes) == 60 and minutes[-1][0] == 2.0 and minutes[0][0] == 0.0
    clock.now += p.HOUR
    assert all(m[0] == 0.0 for m in pl.snapshot(history=True)["history"]["minutes"])


def test_first_hops_are_bounded(monkeypatch):
    monkeypatch.setattr(p, "FIRST_SEEN", 3)
    pl = Pipeline({}, None, Clock())
    for i in range(10):
        pl.record(event(f"Q{i}", "ingress", T0))
    assert list(pl.first) == ["Q7", "Q8", "Q9"]


def test_errors_are_read_from_the_services_metrics():
    text = (
        "# TYPE mailflow_delivery_recipients_total counter\n"
        'mailflow_delivery_recipients_total{route="remote",outcome="deferred"} 3.0\n'
        'mailflow_delivery_recipients_total{route="remote",outcome="bounced"} 2.0\n'
        'mailflow_delivery_recipients_total{route="local",outcome="delivered"} 50.0\n'
    )
    assert errors_in(text, "delivery") == 5.0
    assert errors_in("# TYPE mailflow_smtp_internal_errors_total counter\nmailflow_smtp_internal_errors_total 4\n", "smtp-ingress") == 4.0
    assert errors_in("", "queue") == 0.0


def test_each_replica_is_listed_by_the_instance_it_names():
    clock = Clock()
    pl = Pipeline({}, None, clock)
    pl.seen("delivery", {"instance": "delivery", "version": "1.0"}, up=True)
    pl.seen("delivery", {"instance": "delivery-1"}, ready=True)
    pl.seen("delivery", {"instance": "delivery"}, ready=True)
    reps = {s["service"]: s["replicas"] for s in pl.snapshot()["stages"]}["delivery"]
    assert [(r["instance"], r["ready"], r["stale"]) for r in reps] == [("delivery", True, False), ("delivery-1", True, False)]
    clock.now += p.REPLICA_STALE_S
    pl.seen("delivery", {"instance": "delivery"}, ready=True)
    reps = {s["service"]: s["replicas"] for s in pl.snapshot()["stages"]}["delivery"]
    assert [(r["instance"], r["ready"], r["stale"]) for r in reps] == [("delivery", True, False), ("delivery-1", False, True)]
    clock.now += p.REPLICA_FORGET_S
    pl.seen("delivery", {"instance": "delivery"}, ready=True)
    assert [r["instance"] for r in {s["service"]: s["replicas"] for s in pl.snapshot()["stages"]}["delivery"]] == ["delivery"]
