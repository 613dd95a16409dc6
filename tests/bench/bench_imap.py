"""IMAP and POP3 benchmark (issue 6 §6): the whole stack, then Dovecot, the same workload.

A fresh stack (users user0..user99@bench.test, password pw; imap-pop3 with default_domain bench.test so
"user80" logs in as it does against Dovecot), then:
  fill        imap_fetch --fill: 10 users x 100 messages of 4 KiB, APPENDed over IMAP
  fetch       imap_fetch: 10 clients, each 20 sessions of LOGIN, SELECT, FETCH 1:* BODY.PEEK[], LOGOUT
  logins      imap_logins: 10 clients, each 100 sessions of connect, LOGIN, LOGOUT
  retr        pop3_retr: 10 clients, each 20 sessions of USER/PASS, LIST, RETR every message, QUIT
  idle        e2e_latency --mode idle: SMTP in, until `* n EXISTS` reaches an IDLE client (p50, p99)
  cpu         for fetch, logins and retr: CPU microseconds per message of imap-pop3, mailbox-store and
              the load tool, the ceiling they allow on this machine's cores, and how busy the machine
              was with other work meanwhile (on a shared box the rates alone mislead)
  select      one mailbox of 100,000 small messages (stored in batches through the store's REST API),
              then SELECT timed from the command to the tagged OK (median of 5, a fresh session each)
Then the peers (tests/bench/peers, unless MAILFLOW_BENCH_PEERS=0): the same fill, fetch, logins, retr
and idle against Dovecot in its stock login mode (IDLE's mail comes through Postfix), then fetch, logins
and retr again in Dovecot's high-performance login mode; CPU there is that of Dovecot's process tree.
Figures print as a table and as `BENCH {json}` lines (tests/bench/run_all.py). Only loopback is used;
every step has a timeout. `python -m tests.bench.bench_imap --quick` skips the 100k SELECT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mailflow.stack import Ports, Stack
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient
from tests.bench.common import (
    CHECKS_OFF,
    bench_users,
    compare,
    cpu_seconds,
    millis,
    peers,
    rate,
    report,
    run_tool,
    tree_cpu,
)

TARGETS = {
    "fetch_msgs_per_s": (">=", 9000),
    "logins_per_s": (">=", 134),
    "retr_msgs_per_s": (">=", 6700),
    "idle_p50_ms": ("<=", 50),
    "select_100k_ms": ("<", 500),
}


def fill_big_mailbox(st: Stack, address: str, n: int) -> None:
    """n small messages into the INBOX of `address`, through the store's batch delivery."""

    async def go() -> None:
        store = StoreClient(st.http_url("mailbox-store"), st.service_token, timeout=120)
        try:
            batch = 1000
            for start in range(0, n, batch):
                items = [
                    DeliverItem(
                        key=f"big-{i}",
                        recipient=address,
                        body=b"From: a@x.test\r\nSubject: m%d\r\nMessage-ID: <%d@x.test>\r\n\r\nsmall body\r\n"
                        % (i, i),
                    )
                    for i in range(start, min(n, start + batch))
                ]
                res = await store.deliver(items)
                bad = [r for r in res if r.status not in ("stored", "duplicate")]
                if bad:
                    raise RuntimeError(f"fill failed: {bad[0]}")
        finally:
            await store.close()

    asyncio.run(go())


def _until(sock: socket.socket, tag: bytes) -> bytes:
    """Read until a line starting with `tag` has arrived whole."""
    data = b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        line_start = data.rfind(b"\r\n", 0, len(data) - 2)
        line_start = 0 if line_start < 0 else line_start + 2
        if data.endswith(b"\r\n") and data[line_start:].startswith(tag):
            return data


def time_select(host: str, port: int, user: str, runs: int = 5) -> tuple[float, float, int]:
    """Milliseconds from sending SELECT to reading its tagged OK, a fresh session each time: the first
    (cold) one and the median; and the EXISTS count it reported."""
    times, exists = [], 0
    for _ in range(runs):
        with socket.create_connection((host, port), timeout=60) as s:
            _until(s, b"* OK")
            s.sendall(f"a1 LOGIN {user} pw\r\n".encode())
            _until(s, b"a1 ")
            t0 = time.perf_counter()
            s.sendall(b"a2 SELECT INBOX\r\n")
            data = _until(s, b"a2 ")
            times.append((time.perf_counter() - t0) * 1000)
            if b"a2 OK" not in data:
                raise RuntimeError(f"SELECT failed: {data[-200:]!r}")
            exists = int(data.split(b" EXISTS")[0].rsplit(b"* ", 1)[1])
            s.sendall(b"a3 LOGOUT\r\n")
    return times[0], statistics.median(times), exists


def verdict(name: str, value: float | None) -> str:
    if value is None or name not in TARGETS:
        return ""
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target if op == "<=" else value < target
    return f"{'ok' if ok else 'MISSED'} ({op} {target})"


class Meter:
    """CPU seconds of the processes that serve a phase, of the load tool, and how busy the whole machine
    was meanwhile: on a shared 2-core box the rate alone says little, CPU per message says more.
    `sources` maps a name to a function returning that server's CPU seconds so far."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, sources: dict[str, Callable[[], float]]):
        self.sources = sources

    @staticmethod
    def _machine() -> tuple[int, int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(values), values[3] + values[4], values[7]  # total, idle + iowait, steal (by the host)

    def __enter__(self) -> Meter:
        self.procs = {s: cpu() for s, cpu in self.sources.items()}
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.tool = kids.ru_utime + kids.ru_stime
        self.machine = self._machine()
        return self

    def __exit__(self, *exc) -> None:
        self.used = {s: cpu() - self.procs[s] for s, cpu in self.sources.items()}
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.used["tool"] = kids.ru_utime + kids.ru_stime - self.tool
        total, idle, steal = self._machine()
        self.busy = 100 * (1 - (idle - self.machine[1]) / max(1, total - self.machine[0]))
        self.steal = 100 * (steal - self.machine[2]) / max(1, total - self.machine[0])
        ours = (
            sum(self.used.values())
            * 100
            / os.cpu_count()
            / max(1e-9, (total - self.machine[0]) / self.HZ / os.cpu_count())
        )
        self.others = max(0.0, self.busy - ours)  # machine busy % not explained by the processes above

    def per(self, n: int) -> dict[str, float]:
        """Microseconds of CPU per unit of work, by process."""
        return {k: round(v / max(1, n) * 1e6, 1) for k, v in self.used.items()}

    def ceiling(self, n: int) -> float:
        """Units per second all cores could do if nothing else ran: cores / CPU per unit."""
        return round(os.cpu_count() * n / max(1e-9, sum(self.used.values())), 0)


def reads(imap_port: int, pop3_port: int, smtp_port: int | None, cpu: dict[str, Callable[[], float]], rounds: int,
          login_rounds: int, idle_n: int, fill: bool = True) -> dict:  # fmt: skip
    """Fill (unless done), warm up, then fetch, logins, retr (each metered) and, given an SMTP port, idle."""
    sessions = ["--first-user", "80", "--users", "10", "-c", "10"]
    imap, pop3 = ["--port", str(imap_port), *sessions], ["--port", str(pop3_port), *sessions]
    if fill:
        run_tool("imap_fetch", *imap, "--fill", "-k", "100", "--rounds", "0")
    run_tool("imap_fetch", *imap, "--rounds", "2")  # warm-up
    run_tool("imap_logins", *imap, "--rounds", "5")
    with Meter(cpu) as m_fetch:
        fetch = run_tool("imap_fetch", *imap, "--rounds", str(rounds))
    with Meter(cpu) as m_login:
        login = run_tool("imap_logins", *imap, "--rounds", str(login_rounds))
    with Meter(cpu) as m_retr:
        pop = run_tool("pop3_retr", *pop3, "--rounds", str(rounds))
    idle = {}
    if smtp_port:
        idle = run_tool("e2e_latency", "--port", str(smtp_port), "--imap-port", str(imap_port), "-n", str(idle_n),
                        "--mode", "idle")  # fmt: skip
    return {
        "fetch_msgs_per_s": fetch.get("msgs_per_sec"),
        "fetch_mb_per_s": fetch.get("mb_per_sec"),
        "fetch_session_p50_ms": fetch.get("session_p50_ms"),
        "fetch_cpu_us_per_msg": m_fetch.per(fetch.get("fetched", 0)),
        "fetch_cpu_ceiling_msgs_per_s": m_fetch.ceiling(fetch.get("fetched", 0)),
        "fetch_machine_busy_pct": round(m_fetch.busy, 1),
        "fetch_others_busy_pct": round(m_fetch.others, 1),
        "fetch_steal_pct": round(m_fetch.steal, 1),
        "logins_per_s": login.get("logins_per_sec"),
        "login_p50_ms": login.get("login_p50_ms"),
        "login_cpu_us": m_login.per(login.get("logins", 0)),
        "retr_msgs_per_s": pop.get("msgs_per_sec"),
        "pop3_sessions_per_s": pop.get("sessions_per_sec"),
        "retr_cpu_us_per_msg": m_retr.per(pop.get("retrieved", 0)),
        "retr_cpu_ceiling_msgs_per_s": m_retr.ceiling(pop.get("retrieved", 0)),
        "retr_machine_busy_pct": round(m_retr.busy, 1),
        "retr_others_busy_pct": round(m_retr.others, 1),
        "retr_steal_pct": round(m_retr.steal, 1),
        **(
            {
                "idle_p50_ms": round(idle["p50_s"] * 1000, 1) if idle.get("p50_s") is not None else None,
                "idle_p99_ms": round(idle["p99_s"] * 1000, 1) if idle.get("p99_s") is not None else None,
            }
            if smtp_port
            else {}
        ),
        "errors": fetch.get("errors", 0)
        + login.get("errors", 0)
        + pop.get("errors", 0)
        + idle.get("errors", 0),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip the 100k SELECT, fewer rounds")
    p.add_argument("--big", type=int, default=100_000, help="messages in the SELECT mailbox")
    a = p.parse_args(argv)
    rounds, login_rounds, idle_n = (5, 20, 20) if a.quick else (20, 100, 40)
    env = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING", **CHECKS_OFF}
    with (
        tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp,
        Stack(Path(tmp), Ports.free(), env=env) as st,
    ):
        bench_users(st)
        cpu = {
            s: (lambda pid=st.procs[(s, 0)].popen.pid: cpu_seconds(pid))
            for s in ("imap-pop3", "mailbox-store")
        }
        figures = reads(st.ports.imap, st.ports.pop3, st.ports.smtp, cpu, rounds, login_rounds, idle_n)
        if not a.quick:
            t0 = time.perf_counter()
            fill_big_mailbox(st, "user50@bench.test", a.big)
            figures["select_fill_s"] = round(time.perf_counter() - t0, 1)
            first, ms, exists = time_select(st.ports.host, st.ports.imap, "user50")
            figures["select_100k_ms"] = round(ms, 1)
            figures["select_100k_first_ms"] = round(first, 1)
            figures["select_exists"] = exists
    report("imap", **figures)
    stock = performance = None
    with peers() as pr:
        if pr is not None:
            dovecot = {"dovecot": lambda: tree_cpu(pr.dovecot.pid)}
            stock = reads(pr.ports.imap, pr.ports.pop3, pr.ports.smtp, dovecot, rounds, login_rounds, idle_n)
            report("imap_peers", server="dovecot", login_mode="stock", **stock)
            pr.restart_dovecot("performance")
            performance = reads(
                pr.ports.imap, pr.ports.pop3, None, dovecot, rounds, login_rounds, idle_n, fill=False
            )
            report("imap_peers", server="dovecot", login_mode="performance", **performance)
    print(f"\n{'figure':<30} {'Mailflow':>10} {'Dovecot':>10} {'performance':>11}  target")
    for name, value in figures.items():
        row = [value, (stock or {}).get(name), (performance or {}).get(name)]
        shown = ["-" if v is None else v for v in row]
        print(f"{name:<30} {shown[0]!s:>10} {shown[1]!s:>10} {shown[2]!s:>11}  {verdict(name, value)}")
    print("cpu_us: CPU microseconds per message (or login) of each process; ceiling: cores / all of it;")
    print("others_busy_pct: how much of the machine other work took meanwhile (the rates suffer from it);")
    print(
        "steal_pct: CPU time the hypervisor gave to other guests (a VM's noise the guest cannot see otherwise)"
    )

    def both(key: str, show: Callable) -> str | None:
        if stock is None:
            return None
        extra = (
            f" ({show(performance[key])} in performance mode)" if performance and key in performance else ""
        )
        return show(stock[key]) + extra

    compare("IMAP FETCH 1:* BODY.PEEK[], 10 clients, 4 KiB", rate(figures["fetch_msgs_per_s"]),
            both("fetch_msgs_per_s", rate))  # fmt: skip
    compare("POP3 RETR, 10 clients", rate(figures["retr_msgs_per_s"]), both("retr_msgs_per_s", rate))
    compare("IMAP logins (connect, LOGIN, LOGOUT), 10 clients", rate(figures["logins_per_s"], "/s"),
            both("logins_per_s", lambda v: rate(v, "/s")))  # fmt: skip
    compare("MAIL FROM → `* n EXISTS` in IDLE, p50", millis(figures["idle_p50_ms"]),
            millis(stock["idle_p50_ms"]) if stock else None)  # fmt: skip
    if "select_100k_ms" in figures:
        compare("SELECT of a 100,000-message INBOX", millis(figures["select_100k_ms"]), None)


if __name__ == "__main__":
    main()
