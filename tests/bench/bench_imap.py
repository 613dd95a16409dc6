"""IMAP and POP3 benchmark (issue 6 §6) on the whole stack, with the peer workload of ../shared/bench.

A fresh stack (users user0..user99@bench.test, password pw; imap-pop3 with default_domain bench.test so
the peer tools' "user80" logins work as they do against Dovecot), then:
  fill        imap_load.py --fill: 10 users x 100 messages of 4 KiB, APPENDed over IMAP
  fetch       imap_load.py: 10 clients, each 20 sessions of LOGIN, SELECT, FETCH 1:* BODY.PEEK[], LOGOUT
  logins      imap_load.py: 10 clients, each 100 sessions of connect, LOGIN, LOGOUT
  retr        pop3_load.py: 10 clients, each 20 sessions of USER/PASS, LIST, RETR every message, QUIT
  idle        e2e_latency.py --mode idle: SMTP in, until `* n EXISTS` reaches an IDLE client (p50, p99)
  select      one mailbox of 100,000 small messages (stored in batches through the store's REST API),
              then SELECT timed from the command to the tagged OK (median of 5, a fresh session each)
Figures print as a table and as `BENCH {json}` lines (tests/bench/run_all.py). Only loopback is used;
every step has a timeout. `python -m tests.bench.bench_imap --quick` skips the 100k SELECT.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

from mailflow.stack import Ports, Stack
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient

from tests.bench.common import bench_users, report, run_tool

TARGETS = {
    "fetch_msgs_per_s": (">=", 9000),
    "logins_per_s": (">=", 134),
    "retr_msgs_per_s": (">=", 6700),
    "idle_p50_ms": ("<=", 50),
    "select_100k_ms": ("<", 500),
}
PEER = "Dovecot stock here: FETCH 9018 msg/s, 134 logins/s, RETR 6684 msg/s, IDLE p50 506 ms"


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
                        body=b"From: a@x.test\r\nSubject: m%d\r\nMessage-ID: <%d@x.test>\r\n\r\nsmall body\r\n" % (i, i),
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip the 100k SELECT, fewer rounds")
    p.add_argument("--big", type=int, default=100_000, help="messages in the SELECT mailbox")
    a = p.parse_args(argv)
    rounds, login_rounds, idle_n = (5, 20, 20) if a.quick else (20, 100, 40)
    env = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp, Stack(Path(tmp), Ports.free(), env=env) as st:
        bench_users(st)
        imap = ["--port", str(st.ports.imap), "--first-user", "80", "--users", "10"]
        run_tool("imap_load.py", *imap, "--fill", "-k", "100", "--rounds", "0", "--login-rounds", "0")
        run_tool("imap_load.py", *imap, "-c", "10", "--rounds", "2", "--login-rounds", "5")  # warm-up
        load = run_tool("imap_load.py", *imap, "-c", "10", "--rounds", str(rounds), "--login-rounds", str(login_rounds))
        pop = run_tool("pop3_load.py", "--port", str(st.ports.pop3), "--first-user", "80", "--users", "10", "-c", "10",
                       "--rounds", str(rounds))  # fmt: skip
        idle = run_tool("e2e_latency.py", "--port", str(st.ports.smtp), "--imap-port", str(st.ports.imap),
                        "-n", str(idle_n), "--mode", "idle")  # fmt: skip
        figures = {
            "fetch_msgs_per_s": load.get("msgs_per_sec"),
            "fetch_mb_per_s": load.get("mb_per_sec"),
            "fetch_session_p50_ms": load.get("session_p50_ms"),
            "logins_per_s": load.get("logins_per_sec"),
            "login_p50_ms": load.get("login_p50_ms"),
            "retr_msgs_per_s": pop.get("msgs_per_sec"),
            "pop3_sessions_per_s": pop.get("sessions_per_sec"),
            "idle_p50_ms": round(idle["p50_s"] * 1000, 1) if idle.get("p50_s") is not None else None,
            "idle_p99_ms": round(idle["p99_s"] * 1000, 1) if idle.get("p99_s") is not None else None,
            "errors": load.get("errors", 0) + pop.get("errors", 0) + idle.get("errors", 0),
        }
        if not a.quick:
            t0 = time.perf_counter()
            fill_big_mailbox(st, "user50@bench.test", a.big)
            figures["select_fill_s"] = round(time.perf_counter() - t0, 1)
            first, ms, exists = time_select(st.ports.host, st.ports.imap, "user50")
            figures["select_100k_ms"] = round(ms, 1)
            figures["select_100k_first_ms"] = round(first, 1)
            figures["select_exists"] = exists
    report("imap", **figures)
    print(f"\n{'figure':<24} {'value':>10}  target")
    for name, value in figures.items():
        print(f"{name:<24} {value if value is not None else '-':>10}  {verdict(name, value)}")
    print(PEER)


if __name__ == "__main__":
    main()
