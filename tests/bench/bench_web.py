"""What an open console costs the pipeline (issue 17's target: under 2 % of its throughput).

One stack (the web service included, as `make run` has it), users user0..user99@bench.test and an admin.
Rounds alternate: the end-to-end workload of bench_e2e (smtp_ingest, N x 4 KiB, 20 connections, until
the queue counts every recipient delivered) with no console open, then the same with an admin logged in
to the console and its live pipeline page open: a client reading the page's server-sent events, as the
browser's EventSource does, which makes the console poll every service's /metrics and follow NATS trace
events for as long as it is open. Figures: the median throughput of each kind and their ratio, and the
stack's CPU per message (every service and nats-server) of each kind, the steadier measure on a shared
machine. The run fails if the open page received no event (it would measure nothing).

    python -m tests.bench.bench_web [-n 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.bench.bench_e2e import ENV
from tests.bench.common import bench_users, delivered, rate, report, run_tool, stack_cpu, wait_delivered

TARGET_SHARE = 0.98
ADMIN, ADMIN_PW = "admin@bench.test", "admin-pw-bench"


def make_admin(st: Stack) -> None:
    headers = {ADMIN_TOKEN_HEADER: st.admin_token}
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers=headers, timeout=30) as c:
        c.post("/admin/users", json={"address": ADMIN, "password": ADMIN_PW}).raise_for_status()
        c.put(f"/admin/users/{ADMIN}/role", json={"role": "admin"}).raise_for_status()


class LiveView:
    """An admin session with the pipeline page open: reads its event stream until stopped."""

    def __init__(self, base: str):
        self.base, self.events, self.error = base, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveView:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=30, follow_redirects=False) as c:
                form = c.get("/admin/login").text
                csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
                r = c.post("/admin/login", data={"csrf": csrf, "address": ADMIN, "password": ADMIN_PW})
                if r.status_code != 303:
                    raise RuntimeError(f"admin login answered {r.status_code}")
                c.get("/admin/pipeline").raise_for_status()
                while not self._stop.is_set():  # the page's EventSource reconnects when a stream ends
                    with c.stream("GET", "/admin/pipeline/events") as events:
                        for line in events.iter_lines():
                            if line.startswith("data: "):
                                self.events += 1
                            if self._stop.is_set():
                                return
        except Exception as exc:  # reported by the round that needed it
            self.error = exc


def one_round(st: Stack, n: int) -> tuple[float, float]:
    """(messages a second end to end, the stack's CPU microseconds per message)."""
    base = delivered(st)
    cpu0 = stack_cpu(st)
    t0 = time.perf_counter()
    load = run_tool("smtp_ingest", "--port", str(st.ports.smtp), "--size", "4096", "--users", "100", "-n", str(n), "-c", "20")
    t_end = wait_delivered(st, base + load["accepted"], 600)
    cpu1 = stack_cpu(st)
    cpu = sum(cpu1.values()) - sum(cpu0.values())
    return load["accepted"] / (t_end - t0), cpu / load["accepted"] * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", "-n", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    figures: dict[str, list[tuple[float, float]]] = {"closed": [], "open": []}
    events = 0
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp, Stack(Path(tmp), Ports.free(), env=ENV) as st:
        bench_users(st)
        make_admin(st)
        console = f"http://{st.ports.host}:{st.ports.web}"
        run_tool("smtp_ingest", "--port", str(st.ports.smtp), "--size", "4096", "--users", "100", "-n", "500", "-c", "20")
        wait_delivered(st, 500, 120)  # warm-up: connections, caches
        for _ in range(a.rounds):
            figures["closed"].append(one_round(st, a.messages))
            with LiveView(console) as view:
                figures["open"].append(one_round(st, a.messages))
            if view.error is not None or view.events == 0:
                raise RuntimeError(f"the live page received {view.events} events ({view.error!r})")
            events += view.events
    med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in figures.items()}
    share = med["open"][0] / med["closed"][0]
    cpu_cost = med["open"][1] / med["closed"][1] - 1
    print(f"end to end, 4 KiB, {a.messages} messages a round: {figures}")
    print(
        f"console open {rate(med['open'][0])} vs closed {rate(med['closed'][0])}: {share:.1%} (target >= {TARGET_SHARE:.0%}); "
        f"CPU per message {med['open'][1]:.0f} vs {med['closed'][1]:.0f} us ({cpu_cost:+.1%}); {events} events read"
    )
    report("web_console_cost", closed_msgs_per_s=round(med["closed"][0], 1), open_msgs_per_s=round(med["open"][0], 1),
           share=round(share, 3), cpu_us_per_msg_closed=round(med["closed"][1]), cpu_us_per_msg_open=round(med["open"][1]),
           events=events, target=TARGET_SHARE)  # fmt: skip


if __name__ == "__main__":
    main()
