"""The live pipeline: per stage, messages per second now, errors, health; queue depth by state; the last
hour as per-minute points (rates and delivery latency).

Fed from two sides, and only while someone watches (a snapshot asked for in the last WATCH_S seconds), so
that a console nobody looks at costs the pipeline nothing but a few requests a minute. NATS: every hop's
TraceEvent (`trace.>`, a core subscription made when watching begins and dropped when it ends) counts for
its stage in per-second buckets (an hour of them, a fixed array: memory does not grow), and the time from
a message's first hop to its delivery (step `mailbox` or `delivery`) is its latency (first hops
remembered for at most FIRST_SEEN messages, the oldest forgotten first). Followed always, every TOTALS_S
seconds: smtp-ingress's count of accepted messages, the queue's of delivered recipients and its
histogram of their delivery latency, whose differences are the hour's per-minute rates and latency.
(Measured: following every trace event while nobody watched cost the web process ~77 us of CPU per
message, 6 % of what the whole pipeline spends.) HTTP: while someone watches, every POLL_S seconds each
service's /healthz, /readyz and /metrics (errors:
ERROR_METRICS, read at most MAX_METRICS_BYTES; with replicas, the counters of the one that answered) and
the queue's /queue/counts. Each request is a new connection, so behind a balancer the polls reach the
replicas in turn: every replica that answered in the last REPLICA_FORGET_S seconds is listed, by the
instance name its health answer gives, as not seen once it has been silent REPLICA_STALE_S seconds. A service that does not answer is shown
down with its last figures; an event that does not parse is skipped. Nothing here raises into a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict, deque
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mailflow.contracts import subjects
from mailflow.contracts.messages import TraceEvent

log = logging.getLogger(__name__)

# (trace step, the service that does it, what the page calls it), in the order mail flows.
STAGES = (
    ("ingress", "smtp-ingress", "SMTP in"),
    ("queue", "queue", "Queue"),
    ("resolver", "resolver", "DNS"),
    ("delivery", "delivery", "Delivery"),
    ("mailbox", "mailbox-store", "Mailboxes"),
    ("retrieved", "imap-pop3", "IMAP / POP3"),
)
DELIVERED_STEPS = ("mailbox", "delivery")
# Counters whose samples (those with one of the label values, or all) are a stage's errors.
ERROR_METRICS: dict[str, tuple[tuple[str, str | None, tuple[str, ...]], ...]] = {
    "smtp-ingress": (("mailflow_smtp_internal_errors", None, ()),),
    "queue": (("mailflow_queue_results", "outcome", ("bounced", "expired")),),
    "resolver": (("mailflow_resolver_lookups", "status", ("temp_fail",)),),
    "delivery": (("mailflow_delivery_recipients", "outcome", ("deferred", "bounced")),),
    "mailbox-store": (("mailflow_mailbox_store_db_errors", None, ()),),
    "imap-pop3": (("mailflow_imap_logins", "result", ("failed", "unavailable")),),
}
HOUR = 3600
FIRST_SEEN = 100_000
POLL_S = 2.0
WATCH_S = 30.0
TOTALS_S = 60.0  # the per-minute history's step
ACCEPTED = "mailflow_smtp_messages_accepted"
LATENCY = "mailflow_queue_delivery_latency_seconds"
MAX_METRICS_BYTES = 4 * 1024 * 1024
REPLICA_STALE_S = 15.0  # a replica not heard from for this long is shown as not seen
REPLICA_FORGET_S = 300.0  # and after this long no more
MAX_REPLICAS = 50


def total_of(text: str, family_name: str, sample: str = "_total") -> float:
    """The sum of a counter's samples (or a histogram's `_sum` or `_count`) in Prometheus text (0 when it
    is not there)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == family_name
        for s in family.samples
        if s.name.endswith(sample)
    )


def errors_in(text: str, service: str) -> float:
    """The sum of the service's error samples in Prometheus text (0 for what is not there)."""
    wanted = {name: (label, values) for name, label, values in ERROR_METRICS.get(service, ())}
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        label, values = wanted[family.name]
        for s in family.samples:
            if s.name.endswith("_total") and (label is None or s.labels.get(label) in values):
                total += s.value
    return total


class Seconds:
    """Per-second sums for the last hour in fixed arrays: add(t, v), sum over the last n seconds."""

    def __init__(self):
        self.stamp, self.value, self.count = [-1] * HOUR, [0.0] * HOUR, [0] * HOUR

    def add(self, t: float, value: float = 1.0) -> None:
        sec = int(t)
        i = sec % HOUR
        if self.stamp[i] != sec:
            self.stamp[i], self.value[i], self.count[i] = sec, 0.0, 0
        self.value[i] += value
        self.count[i] += 1

    def window(self, now: float, seconds: int) -> tuple[float, int]:
        end = int(now)
        v, n = 0.0, 0
        for sec in range(end - seconds + 1, end + 1):
            i = sec % HOUR
            if self.stamp[i] == sec:
                v, n = v + self.value[i], n + self.count[i]
        return v, n


class Pipeline:
    def __init__(self, service_urls: dict[str, str], queue_api, clock=time.time):
        self.urls, self.queue_api, self.clock = service_urls, queue_api, clock
        self.events = {step: Seconds() for step, _, _ in STAGES}
        self.latency = Seconds()
        self.first: OrderedDict[str, float] = OrderedDict()
        self.health: dict[str, dict] = {s: {"up": False, "ready": False, "version": ""} for _, s, _ in STAGES}
        self.errors: dict[str, float] = dict.fromkeys(self.health, 0.0)
        self.counts: dict = {"states": {}, "messages": 0}
        self.watched_at = -WATCH_S
        self.polled_at = 0.0
        # (t, accepted, delivered, latency seconds summed, deliveries timed): the hour's history
        self.totals: deque[tuple[float, float, float, float, float]] = deque(maxlen=HOUR // int(TOTALS_S) + 1)
        self.nc = None
        self.sub = None
        self.live: dict[str, float] = {}  # accepted, delivered, spent, timed: as read by the last poll
        # {service: {instance: {"up", "ready", "version", "seen"}}}: each replica that answered lately
        self.replicas: dict[str, dict[str, dict]] = {s: {} for s in self.health}
        # A new connection for every request: behind a balancer (a Kubernetes Service, `Stack(replicas=2)`)
        # successive polls then reach the replicas in turn, and each one's health is seen.
        self.client = httpx.AsyncClient(timeout=POLL_S, limits=httpx.Limits(max_keepalive_connections=0))

    # --- NATS side ------------------------------------------------------------------------------

    def record(self, e: TraceEvent) -> None:
        now = self.clock()
        if e.step in self.events:
            self.events[e.step].add(now)
        at = e.at.timestamp()
        started = at - e.duration_ms / 1000
        first = self.first.get(e.queue_id)
        if first is None:
            self.first[e.queue_id] = first = started
            while len(self.first) > FIRST_SEEN:
                self.first.popitem(last=False)
        if e.step in DELIVERED_STEPS:
            self.latency.add(now, max(0.0, at - first))

    async def on_msg(self, msg) -> None:
        try:
            self.record(TraceEvent.model_validate_json(msg.data))
        except ValueError:
            pass

    async def subscribe(self, nc) -> None:
        """Where to follow the trace events from, while watched (`run` subscribes and unsubscribes)."""
        self.nc = nc

    def watched(self) -> bool:
        return self.clock() - self.watched_at < WATCH_S

    async def _follow(self) -> None:
        """Subscribed to the trace events exactly while the page is watched."""
        if self.nc is None:
            return
        try:
            if self.watched() and self.sub is None:
                self.sub = await self.nc.subscribe(subjects.TRACE_ALL, cb=self.on_msg)
            elif not self.watched() and self.sub is not None:
                sub, self.sub = self.sub, None
                await sub.unsubscribe()
        except Exception as exc:  # NATS away: tried again at the next turn
            log.debug("trace subscription not changed: %s", exc)

    # --- HTTP side ------------------------------------------------------------------------------

    async def _service(self, client: httpx.AsyncClient, service: str) -> None:
        base = self.urls[service]
        h = self.health[service]
        try:
            r = await client.get(base + "/healthz")
            h["up"], h["version"] = r.status_code == 200, r.json().get("version", "")
            self.seen(service, r.json(), up=h["up"])
            r = await client.get(base + "/readyz")
            h["ready"] = r.status_code == 200
            self.seen(service, r.json(), ready=h["ready"])
            async with client.stream("GET", base + "/metrics") as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_METRICS_BYTES:
                        raise ValueError("metrics too large")
            text = body.decode("utf-8", "replace")
            self.errors[service] = errors_in(text, service)
            if service == "smtp-ingress":  # the totals as of now: the chart's last, unfinished step
                self.live["accepted"] = total_of(text, ACCEPTED)
            elif service == "queue":
                self.live["spent"], self.live["timed"] = total_of(text, LATENCY, "_sum"), total_of(text, LATENCY, "_count")
        except (httpx.HTTPError, ValueError) as exc:
            h["up"] = h["ready"] = False
            log.debug("%s did not answer: %s", service, exc)

    def seen(self, service: str, answer: dict, **state) -> None:
        """Note what one replica said (its /healthz or /readyz answer names it); forget those gone for long."""
        now = self.clock()
        instance = str(answer.get("instance", ""))[:100] or "?"
        known = self.replicas[service]
        r = known.setdefault(instance, {"up": True, "ready": False, "version": ""})
        r.update(state, seen=now)
        r["version"] = str(answer.get("version", r["version"]))[:40]
        for name in [n for n, v in known.items() if now - v["seen"] > REPLICA_FORGET_S]:
            del known[name]
        while len(known) > MAX_REPLICAS:
            del known[min(known, key=lambda n: known[n]["seen"])]

    async def poll(self) -> None:
        await asyncio.gather(*(self._service(self.client, s) for s in self.health))
        with contextlib.suppress(Exception):
            self.counts = await self.queue_api.get("/queue/counts")
            self.live["delivered"] = float(self.counts["states"].get("delivered", 0))
        self.polled_at = self.clock()

    async def watch(self) -> None:
        """Someone opened the page: follow the trace events from now on, not from the next turn."""
        self.watched_at = self.clock()
        await self._follow()

    async def poll_totals(self) -> None:
        """One point of the hour's history: messages accepted and recipients delivered so far."""
        try:
            r = await self.client.get(self.urls["smtp-ingress"] + "/metrics")
            accepted = total_of(r.text[:MAX_METRICS_BYTES], ACCEPTED)
            q = (await self.client.get(self.urls["queue"] + "/metrics")).text[:MAX_METRICS_BYTES]
            timed_sum, timed = total_of(q, LATENCY, "_sum"), total_of(q, LATENCY, "_count")
            counts = await self.queue_api.get("/queue/counts")
            delivered = float(counts["states"].get("delivered", 0))
        except Exception as exc:  # a gap in the history, not an error on the page
            log.debug("totals not read: %s", exc)
            return
        self.totals.append((self.clock(), accepted, delivered, timed_sum, timed))

    def fresh(self) -> bool:
        return self.clock() - self.polled_at < 2 * POLL_S

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._follow()
                if self.watched():
                    await self.poll()
                if not self.totals or self.clock() - self.totals[-1][0] >= TOTALS_S:
                    await self.poll_totals()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
        finally:
            if self.sub is not None:
                with contextlib.suppress(Exception):
                    await self.sub.unsubscribe()
            await self.client.aclose()

    # --- what the page shows --------------------------------------------------------------------

    def snapshot(self, history: bool = False) -> dict:
        now = self.clock()
        self.watched_at = now
        stages = []
        for step, service, label in STAGES:
            n, _ = self.events[step].window(now, 5)
            replicas = [
                {"instance": name, "ready": r["ready"] and now - r["seen"] < REPLICA_STALE_S,
                 "stale": now - r["seen"] >= REPLICA_STALE_S, "version": r["version"]}
                for name, r in sorted(self.replicas[service].items())
            ]  # fmt: skip
            stages.append({
                "step": step, "service": service, "label": label, "rate": round(n / 5, 2),
                "errors": self.errors[service], **self.health[service], "replicas": replicas,
            })  # fmt: skip
        lat, lat_n = self.latency.window(now, 60)
        out = {
            "at": datetime.fromtimestamp(now).isoformat(timespec="seconds"),
            "stages": stages,
            "counts": self.counts,
            "latency_s": round(lat / lat_n, 3) if lat_n else None,
        }
        if history:
            out["history"] = self.history(now)
        return out

    def history(self, now: float) -> dict:
        """Per step of the last hour, from the totals' differences: messages in (accepted) and recipients
        delivered per second, and their mean delivery latency (s; None for a step with no delivery). A
        replica restarted meanwhile counts from 0 again: a step that would go negative shows 0 / None."""
        points = [x for x in self.totals if now - x[0] <= HOUR]
        live = self.live
        if points and len(live) == 4 and self.polled_at - points[-1][0] >= 1:  # the step under way, while watched
            points.append((self.polled_at, live["accepted"], live["delivered"], live["spent"], live["timed"]))
        minutes = []
        for (t0, a0, d0, s0, n0), (t1, a1, d1, s1, n1) in itertools.pairwise(points):
            span = max(t1 - t0, 1.0)
            timed, spent = n1 - n0, s1 - s0
            minutes.append([
                round(max(a1 - a0, 0) / span, 3), round(max(d1 - d0, 0) / span, 3),
                round(spent / timed, 3) if timed > 0 and spent >= 0 else None,
            ])  # fmt: skip
        return {"minutes": minutes}
