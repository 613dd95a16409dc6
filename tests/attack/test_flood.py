"""Resource limits (issue 12): thousands of idle and slow (slowloris) connections against SMTP, IMAP and
POP3 of a whole stack; the services' memory stays bounded and other clients are served within a second.

The flood comes from many loopback addresses (127.0.0.10 and up), a few connections each, so that
per-address connection caps do not turn it away: this measures what the connections themselves cost.
Half of them only read the greeting and stay silent; the others are slowloris clients that send one
byte every couple of seconds and never finish: a command line (SMTP, POP3), an IMAP literal announced
with LITERAL+ (the server must not reserve its size up front). Meanwhile smtplib, imaplib and poplib
from 127.0.0.1 connect, log in and quit, each within PROBE_LIMIT_S, and the resident memory (RSS) of
smtp-ingress and imap-pop3 is read from /proc.

A second test holds the per-address cap: one address opens more connections than it may, the extra
ones are refused, and a client from another address is still served.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import httpx
import pytest

from mailflow.stack import Ports, Stack
from tests.attack.clients import PROBES, add_alice, probe_smtp
from tests.support.drip import dribble

pytestmark = [pytest.mark.attack, pytest.mark.timeout(600)]

PER_SERVICE = int(os.environ.get("MAILFLOW_FLOOD_CONNECTIONS", "1500"))  # per protocol
ADDRESSES = [f"127.0.0.{i}" for i in range(10, 250)]
PROBE_LIMIT_S = 1.0
DRIP_S = 2.0  # a slowloris client sends one byte this often
HOLD_S = 20.0  # the flood stands this long with probes running
MAX_BYTES_PER_CONNECTION = 64 * 1024  # RSS growth per open connection


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        pytest.skip(f"RLIMIT_NOFILE {soft} < {need} needed for the flood")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    raise_nofile(3 * PER_SERVICE + 1000)
    st = Stack(tmp_path_factory.mktemp("flood"), Ports.free()).start()
    try:
        add_alice(st)
        yield st
    finally:
        st.stop()


# --- the flood --------------------------------------------------------------------------------------------

SLOW = {
    "smtp": b"EHLO slow.example.test and this line never ends ",
    "imap": b"a1 LOGIN {4000+}\r\n",  # LITERAL+: the client sends the literal without waiting
    "pop3": b"USER alice@example.test and on and on ",
}


class Flood:
    def __init__(self, st: Stack):
        self.st = st
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []
        self.failed: dict[str, int] = {}
        self.opened: dict[str, int] = {}

    async def _open(self, proto: str, port: int, i: int, slow: bool) -> None:
        local = ADDRESSES[i % len(ADDRESSES)]
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.st.ports.host, port, local_addr=(local, 0)), 30
            )
            await asyncio.wait_for(reader.readline(), 30)  # the greeting: the connection is being served
        except (OSError, TimeoutError):
            self.failed[proto] = self.failed.get(proto, 0) + 1
            return
        self.writers.append(writer)
        self.opened[proto] = self.opened.get(proto, 0) + 1
        if slow:
            self.tasks.append(asyncio.create_task(dribble(reader, writer, SLOW[proto], DRIP_S)))

    async def open(self, per_service: int) -> None:
        p = self.st.ports
        jobs = []
        for proto, port in (("smtp", p.smtp), ("imap", p.imap), ("pop3", p.pop3)):
            jobs += [self._open(proto, port, i, slow=i % 2 == 1) for i in range(per_service)]
        for k in range(0, len(jobs), 200):  # not all at once: the listen backlog is finite
            await asyncio.gather(*jobs[k : k + 200])

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in self.writers:
            w.close()
        await asyncio.sleep(0)


async def timed_probes(st: Stack, until: float) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in PROBES}
    while time.monotonic() < until:
        for name, probe in PROBES.items():
            t0 = time.monotonic()
            await asyncio.to_thread(probe, st)
            times[name].append(time.monotonic() - t0)
        await asyncio.sleep(1.0)
    return times


def pids(st: Stack) -> dict[str, int]:
    return {s: st.procs[(s, 0)].popen.pid for s in ("smtp-ingress", "imap-pop3")}


async def test_thousands_of_idle_and_slow_connections_cost_bounded_memory_and_starve_no_one(stack):
    st = stack
    for probe in PROBES.values():  # warm: the first login pays for caches, not the flood
        probe(st)
    base = {s: rss(pid) for s, pid in pids(st).items()}
    flood = Flood(st)
    t0 = time.monotonic()
    await flood.open(PER_SERVICE)
    opened_in = time.monotonic() - t0
    try:
        times = await timed_probes(st, time.monotonic() + HOLD_S)
        peak = {s: rss(pid) for s, pid in pids(st).items()}
        alive = not st.dead()
    finally:
        await flood.close()
    opened = flood.opened
    per_conn = {
        "smtp-ingress": (peak["smtp-ingress"] - base["smtp-ingress"]) / max(opened.get("smtp", 0), 1),
        "imap-pop3": (peak["imap-pop3"] - base["imap-pop3"]) / max(opened.get("imap", 0) + opened.get("pop3", 0), 1),
    }
    slowest = {k: max(v) for k, v in times.items()}
    print(
        f"\nflood: {sum(opened.values())} connections open {opened} (refused/failed {flood.failed}) in "
        f"{opened_in:.1f} s, half of them slowloris\n"
        f"flood: RSS before -> during: "
        + ", ".join(f"{s} {base[s] / 2**20:.0f} -> {peak[s] / 2**20:.0f} MiB ({per_conn[s] / 1024:.1f} KiB/connection)" for s in base)
        + f"\nflood: normal clients during the flood, slowest of {len(times['smtp'])} each: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in slowest.items())
    )
    assert alive, [p.name for p in st.dead()]
    assert not flood.failed, f"flood connections not served: {flood.failed}"
    for service, b in per_conn.items():
        assert b <= MAX_BYTES_PER_CONNECTION, f"{service}: {b / 1024:.0f} KiB per idle/slow connection"
    for name, t in slowest.items():
        assert t <= PROBE_LIMIT_S, f"{name} client took {t:.2f} s during the flood"


def test_per_address_cap_refuses_the_excess_and_still_serves_others(stack):
    """smtp-ingress's per-address cap (max_connections_per_ip, 50): connection 51 from one address gets
    421 4.7.0 and is closed; a client from another address is served all the while."""
    import socket

    st = stack
    cap = 50
    held, refused = [], 0
    try:
        for _ in range(cap + 20):
            s = socket.create_connection((st.ports.host, st.ports.smtp), timeout=5, source_address=("127.0.0.3", 0))
            greeting = s.recv(512)
            if greeting.startswith(b"421"):
                refused += 1
                s.close()
            else:
                assert greeting.startswith(b"220"), greeting
                held.append(s)
        t0 = time.monotonic()
        probe_smtp(st)
        took = time.monotonic() - t0
    finally:
        for s in held:
            s.close()
    print(f"\ncap: {len(held)} held from one address, {refused} refused; another address served in {took * 1000:.0f} ms")
    assert len(held) == cap and refused == 20
    assert took <= PROBE_LIMIT_S


FD_LIMIT = 512


def metric(st: Stack, service: str, name: str) -> float:
    """The sum of a counter's samples whose line starts with `name` on the service's /metrics."""
    text = httpx.get(st.http_url(service) + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit")


@pytest.fixture(scope="module")
def low_fd_stack(tmp_path_factory):
    """A stack whose service processes start with RLIMIT_NOFILE FD_LIMIT / 2, hard FD_LIMIT. A process
    may lower its own hard limit but not raise it again (without CAP_SYS_RESOURCE), so the services
    lower it themselves as the interpreter starts: a sitecustomize module on their PYTHONPATH."""
    site = tmp_path_factory.mktemp("lowfd-site")
    (site / "sitecustomize.py").write_text(
        f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT // 2}, {FD_LIMIT}))\n"
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    st = Stack(tmp_path_factory.mktemp("lowfd"), Ports.free(), env={"PYTHONPATH": path}).start()
    raise_nofile(3 * FD_LIMIT + 1000)
    try:
        add_alice(st)
        yield st
    finally:
        st.stop()


async def test_a_flood_past_the_services_own_fd_limit_still_serves_others(low_fd_stack):
    """Each service raises its soft file limit to the hard one and keeps its connections below it: a
    flood larger than that evicts the oldest connections that have not logged in (or is refused), a
    normal client is still served within a second, and nobody dies."""
    st = low_fd_stack
    for service, pid in pids(st).items():
        assert open_files(pid) == (FD_LIMIT, FD_LIMIT), service
    flood = Flood(st)
    await flood.open(FD_LIMIT + 100)
    try:
        t0 = time.monotonic()
        errors = {}
        for name, probe in PROBES.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(probe, st), 5)
            except Exception as exc:
                errors[name] = type(exc).__name__
        took = time.monotonic() - t0
    finally:
        await flood.close()
    evicted = {
        "smtp-ingress": metric(st, "smtp-ingress", 'mailflow_smtp_rejected_total{reason="evicted",stage="connect"}'),
        "imap-pop3": metric(st, "imap-pop3", "mailflow_imap_connections_evicted_total"),
    }
    print(
        f"\nfd limit {FD_LIMIT}: {flood.opened} served, {flood.failed} refused/failed, evicted {evicted}; "
        f"probes {errors or 'ok'} in {took:.1f} s"
    )
    assert not st.dead(), [p.name for p in st.dead()]
    assert all(evicted.values()), "the flood never reached the cap under the descriptor limit"
    assert not errors and took <= 3 * PROBE_LIMIT_S, errors
