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


def test_history_is_made_of_the_totals_differences_and_forgets_the_hour_before():
    clock = Clock()
    pl = Pipeline({}, None, clock)
    for minute in range(70):  # 120 accepted and 60 delivered a minute, each delivery 0.5 s after acceptance
        pl.totals.append((clock.now, minute * 120.0, minute * 60.0, minute * 30.0, minute * 60.0))
        clock.now += 60
    clock.now -= 60
    minutes = pl.snapshot(history=True)["history"]["minutes"]
    assert len(minutes) == 60 and all(m == [2.0, 1.0, 0.5] for m in minutes)
    pl.totals.append((clock.now + 60, 69 * 120.0, 69 * 60.0, 69 * 30.0, 69 * 60.0))  # a quiet minute
    clock.now += 60
    assert pl.snapshot(history=True)["history"]["minutes"][-1] == [0.0, 0.0, None]
    pl.totals.append((clock.now + 60, 5.0, 2.0, 1.0, 2.0))  # the queue restarted: its totals begin again
    clock.now += 60
    assert pl.snapshot(history=True)["history"]["minutes"][-1] == [0.0, 0.0, None]
    clock.now += p.HOUR + 60
    assert pl.snapshot(history=True)["history"]["minutes"] == []


async def test_trace_events_are_followed_only_while_the_page_is_watched(nats_url):
    """A console nobody looks at subscribes to nothing: the pipeline pays for it only while it is watched."""
    import asyncio

    from mailflow import natsconn
    from mailflow.contracts import subjects

    clock = Clock()
    pl = Pipeline({}, None, clock)
    nc = await natsconn.connect(nats_url, "test")
    try:
        await pl.subscribe(nc)

        async def publish(qid: str) -> None:
            e = event(qid, "ingress", clock.now)
            await nc.publish(subjects.TRACE_ALL.replace(">", "ingress"), e.model_dump_json().encode())
            await nc.flush()
            await asyncio.sleep(0.2)

        await pl._follow()
        await publish("Q-unwatched")
        assert pl.sub is None and "Q-unwatched" not in pl.first
        pl.snapshot()  # someone opens the page
        await pl._follow()
        await publish("Q-watched")
        assert pl.sub is not None and "Q-watched" in pl.first
        clock.now += p.WATCH_S + 1  # and leaves
        await pl._follow()
        await publish("Q-after")
        assert pl.sub is None and "Q-after" not in pl.first
    finally:
        await natsconn.close(nc)


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


def test_the_step_under_way_is_drawn_from_the_last_poll_while_watched():
    clock = Clock()
    pl = Pipeline({}, None, clock)
    pl.totals.append((clock.now, 100.0, 50.0, 10.0, 50.0))
    clock.now += 10
    assert pl.snapshot(history=True)["history"]["minutes"] == []  # nothing polled yet: no step
    pl.live = {"accepted": 140.0, "delivered": 70.0, "spent": 14.0, "timed": 70.0}
    pl.polled_at = clock.now
    assert pl.snapshot(history=True)["history"]["minutes"] == [[4.0, 2.0, 0.2]]  # 40 in, 20 out in 10 s
