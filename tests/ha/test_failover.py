"""The failover test (issue 16 §5): no single point of failure, under load.

The stack: NATS as a three-node JetStream cluster (streams R3), PostgreSQL for the store and the queue,
two replicas of every service behind the harness's balancers (mailflow.balancer, as Kubernetes Services
are). While a sender puts RATE messages a second through SMTP (tests/chaos/load.py: one message per
transaction, each with its own Message-ID, what the client saw of each written down) and IMAP clients
sit in IDLE, one replica of each service in turn, and one NATS node, is killed with SIGKILL and started
again DOWN seconds later. Probers open a new SMTP session and a new IMAP session every 0.2 s.

At the end the stack drains, and:
- every acknowledged message is in its mailbox exactly once, nothing half-sent is stored;
- each IDLE client, reconnected after any break, has been told of every message of its mailbox (EXISTS),
  and POP3 sees the same count;
- per victim the test prints the failover times: how long new SMTP and IMAP sessions failed in a row,
  the longest time without a 250, and the longest time without a new message stored. New sessions must
  never fail for FAILOVER_LIMIT seconds (issue 16's target); the 250 may pause longer only when a NATS
  node led stream MAIL (a Raft election, 4-9 s in nats-server 2.12; tests/ha/test_nats_cluster.py).
"""

from __future__ import annotations

import os
import poplib
import re
import select
import socket
import threading
import time
from collections import Counter

import httpx
import pytest

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.chaos.load import Account, Sender, add_users, session_probers, stored_ids, wait_drained
from tests.support import postgres_schema, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(1200)]

RATE = float(os.environ.get("MAILFLOW_HA_RATE", "45"))  # messages a second: ~3,200 in all
INTERVAL = float(os.environ.get("MAILFLOW_HA_INTERVAL", "8"))  # seconds between kills
DOWN = 2.0  # seconds a killed replica stays dead
FAILOVER_LIMIT = 5.0
ELECTION_LIMIT = 12.0
USERS = 6
DOMAIN = "ha.test"
VICTIMS = ("smtp-ingress", "imap-pop3", "mailbox-store", "queue", "delivery", "resolver", "nats")
IDLERS = 3  # users 0..2 each have one client in IDLE


class Idler(threading.Thread):
    """One IMAP client in IDLE on a user's INBOX, noting the last EXISTS it was told. Whenever the
    connection breaks it connects again (through the balancer: another replica) and notes how long that
    took."""

    def __init__(self, port: int, user: str):
        super().__init__(daemon=True)
        self.port, self.user = port, user
        self.exists = 0
        self.idling = threading.Event()  # set once the first IDLE is under way
        self.breaks: list[tuple[float, float]] = []  # (broke at, back in IDLE at)
        self.stopping = threading.Event()

    def run(self) -> None:
        broke: float | None = None
        while not self.stopping.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    lines = Lines(s)
                    lines.next()  # greeting
                    self._command(s, lines, b"a LOGIN " + self.user.encode() + b" pw")
                    self._command(s, lines, b"b SELECT INBOX")
                    s.sendall(b"c IDLE\r\n")
                    if not lines.next().startswith(b"+"):
                        raise OSError("IDLE refused")
                    self.idling.set()
                    if broke is not None:
                        self.breaks.append((broke, time.monotonic()))
                        broke = None
                    while not self.stopping.is_set():
                        line = lines.next(wait=0.5)
                        if line is not None:
                            self._note(line)
            except (OSError, ValueError):
                if broke is None:
                    broke = time.monotonic()
                self.stopping.wait(0.2)

    def _command(self, s: socket.socket, lines: Lines, line: bytes) -> None:
        tag = line.split(b" ", 1)[0]
        s.sendall(line + b"\r\n")
        while True:
            reply = lines.next()
            self._note(reply)
            if reply.startswith(tag + b" "):
                if not reply.startswith(tag + b" OK"):
                    raise OSError(reply.decode(errors="replace"))
                return

    def _note(self, line: bytes) -> None:
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            self.exists = int(m.group(1))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


class Lines:
    """Lines from a socket; `next(wait=...)` gives None when none came within `wait` seconds (select, so
    the socket never times out halfway through a line). A closed connection raises OSError."""

    def __init__(self, s: socket.socket):
        self.s, self.buf = s, b""

    def next(self, wait: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + wait
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                if wait >= 5.0:
                    raise OSError("no reply in time")
                return None
            data = self.s.recv(65536)
            if not data:
                raise OSError("connection closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"


class Stored:
    """Polls the number of messages stored for all users every 0.2 s and notes when it grew, so the
    longest time without a new message stored (deliveries failing) can be read off."""

    def __init__(self, st: Stack):
        self.st = st
        self.grew: list[float] = []
        self.last = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stored:
        self.thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: self.st.admin_token}, timeout=5) as c:
            while not self.stopping.wait(0.2):
                try:
                    n = sum(c.get(f"/admin/users/user{i}@{DOMAIN}").json()["messages"] for i in range(USERS))
                except (httpx.HTTPError, KeyError, ValueError):
                    continue
                if n > self.last:
                    self.grew.append(time.monotonic())
                    self.last = n

    def longest_gap(self, start: float, end: float) -> float:
        times = [start, *[t for t in self.grew if start < t < end], end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


def pop3_count(st: Stack, user: str) -> int:
    pop = poplib.POP3(st.ports.host, st.ports.pop3, timeout=30)
    try:
        pop.user(user)
        pop.pass_("pw")
        return pop.stat()[0]
    finally:
        pop.quit()


@pytest.fixture
def databases():
    base = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set: the replicas share PostgreSQL")
    with postgres_schema(base) as store, postgres_schema(base) as queue:
        yield store, queue


def test_kill_one_replica_of_each_service_and_a_nats_node_under_load(tmp_path, databases):
    store_db, queue_db = databases
    env = {
        "MAILFLOW_STORE_DATABASE_URL": store_db,
        "MAILFLOW_STORE_BLOBS": "postgres",  # every store replica reads every body
        "MAILFLOW_QUEUE_DATABASE_URL": queue_db,
        "MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.5",
        "MAILFLOW_QUEUE_FIRST_RETRY_S": "2",
        "MAILFLOW_QUEUE_MAX_RETRY_S": "10",
    }
    with Stack(tmp_path, Ports.free(), env=env, nats_nodes=3, replicas=2) as st:
        add_users(st, USERS, DOMAIN)
        idlers = [Idler(st.ports.imap, f"user{i}@{DOMAIN}") for i in range(IDLERS)]
        for idler in idlers:
            idler.start()
        wait_for(lambda: all(i.idling.is_set() for i in idlers), timeout=15, what="IDLE clients in IDLE")

        probers = session_probers(st, f"user{USERS - 1}@{DOMAIN}")
        stored = Stored(st).start()
        seconds = INTERVAL * (len(VICTIMS) + 2)  # the last victim's window ends before sending does
        sender = Sender(st, int(RATE * seconds * 2), seconds, users=USERS, domain=DOMAIN, threads=6, rate=RATE).start()
        kills: list[tuple[str, float, float]] = []
        errors: list[str] = []
        for k, victim in enumerate(VICTIMS, 1):
            time.sleep(max(0.0, sender.t0 + INTERVAL * k - time.monotonic()))
            killed = time.monotonic()
            try:
                if victim == "nats":
                    st.nats.kill(0)
                    time.sleep(DOWN)
                    st.nats.restart(0)
                else:
                    st.kill(victim, 0)
                    time.sleep(DOWN)
                    st.start_service(victim, 0, timeout=60)
            except Exception as exc:
                errors.append(f"{victim}: {type(exc).__name__}: {exc}")
            kills.append((victim, killed, time.monotonic()))
        sender.join()
        for p in probers.values():
            p.stop()
        dead = [p.name for p in st.dead()]

        wait_drained(st)
        stored.stop()
        seen = stored_ids(st, USERS, DOMAIN)
        per_user = Counter(int(m.split("-")[1]) % USERS for m in seen)  # msg-<n> went to user<n % USERS>
        for i, idler in enumerate(idlers):
            wait_for(lambda i=i, idler=idler: idler.exists == per_user[i], timeout=15, what=f"user{i}'s IDLE told of every message")
        for idler in idlers:
            idler.stop()
        pop3 = {i: pop3_count(st, f"user{i}@{DOMAIN}") for i in range(USERS)}

    account = Account.of(sender.outcome, seen)
    rows = []
    ends = [k[1] for k in kills[1:]] + [sender.deadline]  # a window ends when the next kill comes
    for (victim, killed, back), next_kill in zip(kills, ends, strict=True):
        a, b = killed - 0.5, min(back + (ELECTION_LIMIT if victim == "nats" else FAILOVER_LIMIT), next_kill)
        rows.append(
            (
                victim,
                probers["smtp"].longest_outage(a, b),
                probers["imap"].longest_outage(a, b),
                sender.longest_gap(a, b),
                stored.longest_gap(a, b),
            )
        )
    idle_breaks = [round(back - broke, 2) for i in idlers for broke, back in i.breaks]
    print(
        f"\nfailover: {len(sender.outcome)} messages, {len(account.by['acked'])} acked, "
        f"{len(account.by['refused'])} refused {dict(Counter(c for c in sender.codes.elements() if c != 250))}, "
        f"{len(account.by['ambiguous'])} ambiguous, {len(account.by['unsent'])} unsent; stored {sum(seen.values())}; "
        f"IDLE clients reconnected {len(idle_breaks)} times, back in IDLE after {idle_breaks} s\n"
        "failover: victim          new SMTP fails  new IMAP fails  no 250   no new message stored (s)\n"
        + "\n".join(f"failover: {v:<15} {s:>14.2f}  {i:>14.2f}  {g:>6.2f}   {d:>6.2f}" for v, s, i, g, d in rows)
    )
    assert not errors, errors
    assert not dead, f"died without being killed: {dead}"
    account.check()
    assert pop3 == {i: per_user[i] for i in range(USERS)}, (pop3, per_user)
    assert len(account.by["acked"]) >= 0.8 * len(sender.outcome), "most messages should get through"
    for victim, smtp_fail, imap_fail, _, _ in rows:
        assert smtp_fail < FAILOVER_LIMIT and imap_fail < FAILOVER_LIMIT, f"{victim}: new sessions failed too long"
    assert all(back - broke < FAILOVER_LIMIT for i in idlers for broke, back in i.breaks), idle_breaks
