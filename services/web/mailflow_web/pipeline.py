"""The live pipeline: per stage, messages per second now, errors, health; queue depth by state; the last
hour as per-minute points (rates and delivery latency).

Fed from two sides. NATS: every hop's TraceEvent (`trace.>`, core subscription) counts for its stage in
per-second buckets (an hour of them, a fixed array: memory does not grow), and the time from a message's
first hop to its delivery (step `mailbox` or `delivery`) is its latency (first hops remembered for at most
FIRST_SEEN messages, the oldest forgotten first). HTTP: while someone watches (a snapshot asked for in the
last WATCH_S seconds), every POLL_S seconds each service's /healthz, /readyz and /metrics (errors:
ERROR_METRICS, read at most MAX_METRICS_BYTES; with replicas, the counters of the one that answered) and
the queue's /queue/counts. Each request is a new connection, so behind a balancer the polls reach the
replicas in turn: every replica that answered in the last REPLICA_FORGET_S seconds is listed, by the
instance name its health answer gives, as not seen once it has been silent REPLICA_STALE_S seconds. A service that does not answer is shown
down with its last figures; an event that does not parse is skipped. Nothing here raises into a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
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
MAX_METRICS_BYTES = 4 * 1024 * 1024
REPLICA_STALE_S = 15.0  # a replica not heard from for this long is shown as not seen
REPLICA_FORGET_S = 300.0  # and after this long no more
MAX_REPLICAS = 50


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
        self.watched_at = 0.0
        self.polled_at = 0.0
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
        await nc.subscribe(subjects.TRACE_ALL, cb=self.on_msg)

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
            self.errors[service] = errors_in(body.decode("utf-8", "replace"), service)
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
        self.polled_at = self.clock()

    def fresh(self) -> bool:
        return self.clock() - self.polled_at < 2 * POLL_S

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if self.clock() - self.watched_at < WATCH_S:
                    await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
        finally:
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
        """Per minute for the last hour: messages in (ingress) and delivered per second, mean latency (s)."""
        start = int(now) - HOUR + 60
        minutes = []
        for m in range(60):
            t = start + m * 60
            inn, _ = self.events["ingress"].window(t, 60)
            out = sum(self.events[s].window(t, 60)[0] for s in DELIVERED_STEPS)
            lat, lat_n = self.latency.window(t, 60)
            minutes.append([round(inn / 60, 3), round(out / 60, 3), round(lat / lat_n, 3) if lat_n else None])
        return {"minutes": minutes}
