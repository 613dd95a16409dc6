"""End-to-end benchmark (issue 4 §7): SMTP accepted -> stored in the mailbox, and 250 -> visible over IMAP.

For 1 and 2 delivery processes, a fresh stack each (users user0..user99@bench.test, password pw):
  throughput   smtp_ingest (N x 4 KiB, 20 connections), then the time until the
               queue has every recipient delivered (= stored, the store confirmed it): msg/s end to end
  stage rates  counters sampled during that run: accepted by smtp-ingress, recorded by queue, stored by
               delivery; each stage's rate over the time it was busy
  drains       delivery stopped, M messages queued, delivery started: how fast it drains M jobs alone;
               the same for the queue (M messages waiting in MAIL): each stage's capacity with a backlog
  latency      e2e_latency --mode poll (t0 = MAIL FROM, until UID SEARCH finds it), p50/p99: at light
               load first (after a warm-up), and again at the end, when user99's INBOX holds ~150 messages
Then the peers (tests/bench/peers, unless MAILFLOW_BENCH_PEERS=0): Postfix delivering into the Maildirs
Dovecot serves, the same warm-up, light-load latency, throughput (until every accepted message is a
file in its Maildir, which is when Dovecot shows it) and latency with the fuller mailbox; the drains
have no counterpart there.
Figures print as a table and as `BENCH {json}` lines (see tests/bench/run_all.py). Bounded: every step
has a timeout; only loopback is used. `python -m tests.bench.bench_e2e --quick` for a short run;
`--sync-off` repeats the 1-process run with JetStream's fsync off (docs/durability.md).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx

from mailflow.stack import Ports, Stack
from tests.bench.common import (
    CHECKS_OFF,
    PEERS_NAME,
    bench_users,
    compare,
    counter,
    delivered,
    millis,
    peers,
    rate,
    report,
    run_tool,
    stack_cpu,
)

# The load tools log in as "user99" (no domain), as with Dovecot; per-message INFO logs off, as for the peers.
ENV = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING", **CHECKS_OFF}


def stage_counts(st: Stack) -> dict[str, float]:
    def metrics(service: str, port: int | None = None) -> str:
        url = f"http://{st.ports.host}:{port}/metrics" if port else st.http_url(service) + "/metrics"
        try:
            return httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            return ""

    accepted = counter(metrics("smtp-ingress"), "mailflow_smtp_messages_accepted_total")
    recorded = counter(metrics("queue"), "mailflow_queue_messages_total", 'result="recorded"')
    stored = sum(
        counter(
            metrics("delivery", p.http_port),
            "mailflow_delivery_recipients_total",
            'outcome="delivered",route="local"',
        )
        for (s, _), p in st.procs.items()
        if s == "delivery" and p.popen.poll() is None
    )
    return {"accepted": accepted, "recorded": recorded, "stored": stored}


def wait_delivered(st: Stack, target: int, timeout: float, samples: list | None = None) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if samples is not None:
            samples.append((time.perf_counter(), stage_counts(st)))
        if delivered(st) >= target:
            return time.perf_counter()
        time.sleep(0.1)
    raise TimeoutError(f"only {delivered(st)} of {target} delivered after {timeout}s")


def rates(samples: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Each stage's rate while it was busy: items done / (time of its last change - its first)."""
    out = {}
    for stage in ("accepted", "recorded", "stored"):
        series = [(t, c[stage]) for t, c in samples]
        first = next(((t, v) for t, v in series if v > series[0][1]), None)
        last_v = series[-1][1]
        last_t = next(t for t, v in series if v == last_v)
        if first and last_t > first[0]:
            # the first change happened somewhere in the sampling interval before it: count from the sample before
            before = max(t for t, v in series if t < first[0])
            out[stage] = round((last_v - series[0][1]) / (last_t - before), 1)
    return out


def latency(smtp_port: int, imap_port: int, n: int) -> dict:
    return run_tool("e2e_latency", "--port", str(smtp_port), "--imap-port", str(imap_port), "-n", str(n), "--mode", "poll",
                    "--interval", "0.002")  # fmt: skip


def run_config(instances: int, n: int, m: int, latency_n: int, sync_always: bool, quick: bool) -> dict:
    tag = f"{instances}x delivery" + ("" if sync_always else ", fsync off")
    with (
        tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp,
        Stack(Path(tmp), Ports.free(), delivery_instances=instances, sync_always=sync_always, env=ENV) as st,
    ):
        bench_users(st)
        smtp = ["--port", str(st.ports.smtp), "--size", "4096", "--users", "100"]
        run_tool("smtp_ingest", *smtp, "-n", "300", "-c", "20")  # warm-up: connections, caches
        wait_delivered(st, 300, 60)
        figures: dict = {"config": tag}
        if not quick or instances == 1:  # light load: one message at a time, user99's INBOX nearly empty
            lat = latency(st.ports.smtp, st.ports.imap, latency_n)
            figures.update(
                latency_p50_ms=round(lat["p50_s"] * 1000, 1),
                latency_p99_ms=round(lat["p99_s"] * 1000, 1),
                latency_errors=lat["errors"],
            )
        base = delivered(st)
        samples = [(time.perf_counter(), stage_counts(st))]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                samples.append((time.perf_counter(), stage_counts(st)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = stack_cpu(st)
        t0 = time.perf_counter()
        load = run_tool("smtp_ingest", *smtp, "-n", str(n), "-c", "20")
        sampling.set()
        sampler.join()
        t_end = wait_delivered(st, base + load["accepted"], 600, samples)
        e2e = load["accepted"] / (t_end - t0)
        cpu1 = stack_cpu(st)
        figures["cpu_us_per_msg"] = {
            name: round((cpu1[name] - cpu0.get(name, 0.0)) / max(load["accepted"], 1) * 1e6) for name in cpu1
        }  # each service's CPU (all its processes) from the first message in until the last is stored
        figures |= {
            "accepted_msgs_per_s": load["msgs_per_sec"],
            "accept_p50_ms": load["p50_ms"],
            "accept_p99_ms": load["p99_ms"],
            "e2e_msgs_per_s": round(e2e, 1),
            "errors": load["errors"],
            "stage_rates": rates(samples),
        }
        # the delivery stage alone: jobs pile up while delivery is stopped, then drain
        for s, i in [k for k in st.procs if k[0] == "delivery"]:
            st.stop_service(s, i)
        base = delivered(st)
        run_tool("smtp_ingest", *smtp, "-n", str(m), "-c", "20")
        time.sleep(1.0)
        procs = [st.start_service("delivery", i, wait=False) for i in range(instances)]
        st.wait_ready(60, procs)  # a delivery process is ready before its lanes start fetching
        t0 = time.perf_counter()
        t_end = wait_delivered(st, base + m, 600)
        figures["delivery_drain_msgs_per_s"] = round(m / (t_end - t0), 1)
        # the queue stage alone: accepted messages pile up in MAIL while the queue is stopped, then drain
        st.stop_service("queue")
        run_tool("smtp_ingest", *smtp, "-n", str(m), "-c", "20")
        time.sleep(1.0)
        st.start_service("queue")  # ready before intake starts fetching
        t0 = time.perf_counter()
        deadline = t0 + 600
        while (
            stage_counts(st)["recorded"] < m and time.perf_counter() < deadline
        ):  # a new process counts from 0
            time.sleep(0.05)
        figures["queue_drain_msgs_per_s"] = round(m / (time.perf_counter() - t0), 1)
        wait_delivered(st, base + 2 * m, 600)
        if not quick or instances == 1:
            lat = latency(st.ports.smtp, st.ports.imap, latency_n)
            figures.update(
                latency_full_mailbox_p50_ms=round(lat["p50_s"] * 1000, 1),
                latency_full_mailbox_p99_ms=round(lat["p99_s"] * 1000, 1),
            )
        return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", "-n", type=int, default=10000)
    p.add_argument("--drain", type=int, default=3000, help="messages for the delivery-alone stage")
    p.add_argument("--latency-messages", type=int, default=200)
    p.add_argument("--instances", default="1,2")
    p.add_argument(
        "--sync-off", action="store_true", help="also run 1 delivery process with JetStream fsync off"
    )
    p.add_argument("--quick", action="store_true", help="2000 messages, 1000 to drain, 100 for latency")
    a = p.parse_args(argv)
    if a.quick:
        a.messages, a.drain, a.latency_messages = 2000, 1000, 100
    configs = [(int(i), True) for i in a.instances.split(",")]
    if a.sync_off:
        configs.append((1, False))
    rows = []
    for instances, sync in configs:
        f = run_config(instances, a.messages, a.drain, a.latency_messages, sync, a.quick)
        report("e2e", **f)
        rows.append(f)
    peer = run_peers(a.messages, a.latency_messages)
    print(
        f"\n{'config':<24} {'accepted/s':>10} {'e2e/s':>7} {'queue drain/s':>13} {'delivery drain/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'p50 full':>8}  stage rates (msg/s)"
    )
    for f in rows + ([peer] if peer else []):
        print(
            f"{f['config']:<24} {f['accepted_msgs_per_s']:>10} {f['e2e_msgs_per_s']:>7} {f.get('queue_drain_msgs_per_s', '-'):>13} {f.get('delivery_drain_msgs_per_s', '-'):>16} "
            f"{f.get('latency_p50_ms', '-'):>7} {f.get('latency_p99_ms', '-'):>7} {f.get('latency_full_mailbox_p50_ms', '-'):>7}  {f.get('stage_rates', '')}"
        )
    print("targets: >= 500 msg/s end to end, p50 <= 15 ms at light load")
    first = rows[0]
    others = ", ".join(f"{rate(f['e2e_msgs_per_s'])} ({f['config']})" for f in rows[1:])
    compare(
        "end to end, SMTP → in the mailbox, 20 connections, 4 KiB",
        f"{rate(first['e2e_msgs_per_s'])} ({first['config']})" + (f"; {others}" if others else ""),
        rate(peer["e2e_msgs_per_s"]) if peer else None,
    )
    if "latency_p50_ms" in first:
        compare(
            "MAIL FROM → visible over IMAP (polling), p50 / p99 at light load",
            f"{millis(first['latency_p50_ms'])} / {millis(first['latency_p99_ms'])}",
            f"{millis(peer['latency_p50_ms'])} / {millis(peer['latency_p99_ms'])}" if peer else None,
        )
        compare(
            "the same, INBOX fuller (after the throughput run), p50 / p99",
            f"{millis(first['latency_full_mailbox_p50_ms'])} / {millis(first['latency_full_mailbox_p99_ms'])}",
            f"{millis(peer['latency_full_mailbox_p50_ms'])} / {millis(peer['latency_full_mailbox_p99_ms'])}"
            if peer
            else None,
        )


def run_peers(n: int, latency_n: int) -> dict | None:
    """Postfix + Dovecot: warm-up, light-load latency, throughput until every message is in its
    Maildir (visible to Dovecot), latency again with the fuller mailbox."""
    with peers() as p:
        if p is None:
            return None
        smtp = ["--port", str(p.ports.smtp), "--size", "4096", "--users", "100", "-c", "20"]
        warm = run_tool("smtp_ingest", *smtp, "-n", "300")
        wait_until_delivered(p, warm["accepted"])
        lat = latency(p.ports.smtp, p.ports.imap, latency_n)
        base = p.delivered()
        t0 = time.perf_counter()
        load = run_tool("smtp_ingest", *smtp, "-n", str(n))
        e2e = load["accepted"] / (wait_until_delivered(p, base + load["accepted"]) - t0)
        full = latency(p.ports.smtp, p.ports.imap, latency_n)
    figures = {
        "config": PEERS_NAME,
        "accepted_msgs_per_s": load["msgs_per_sec"],
        "accept_p50_ms": load["p50_ms"],
        "accept_p99_ms": load["p99_ms"],
        "e2e_msgs_per_s": round(e2e, 1),
        "errors": load["errors"] + lat["errors"] + full["errors"],
        "latency_p50_ms": round(lat["p50_s"] * 1000, 1),
        "latency_p99_ms": round(lat["p99_s"] * 1000, 1),
        "latency_full_mailbox_p50_ms": round(full["p50_s"] * 1000, 1),
        "latency_full_mailbox_p99_ms": round(full["p99_s"] * 1000, 1),
    }
    report("e2e_peers", **figures)
    return figures


def wait_until_delivered(p, target: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while p.delivered() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Postfix delivered {p.delivered()} of {target} in {timeout} s")
        time.sleep(0.02)
    return time.perf_counter()


if __name__ == "__main__":
    main()
