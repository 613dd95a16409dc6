"""Chaos (issue 12): mail under load while every service in turn, and nats-server, is killed with SIGKILL
and started again; afterwards every message the stack acknowledged is in a mailbox exactly once.

The sender keeps SENDERS SMTP connections busy, one message per transaction, each with its own
Message-ID, and writes down for each what the client saw:
- acked: 250 after the final dot; it must be stored exactly once;
- refused: a 4xx/5xx reply at any step; at most once (RFC 5321: a refusal means "not taken", but the
  client cannot tell a 451 that came after the message was already durable);
- ambiguous: the connection broke after the final dot and before the reply (RFC 1047); at most once;
- unsent: the connection broke before the final dot was sent; the server never had the whole message,
  so it must never be stored.
Every attempt uses a new Message-ID (no retries), so any second copy is a duplicate the stack made.

Meanwhile the killer SIGKILLs smtp-ingress, queue, resolver, delivery, mailbox-store, imap-pop3 and
nats-server (its JetStream files kept) in turn, each back after a moment. At the end: the stack drains
(every consumer of MAIL, JOBS and RESULTS with nothing pending or unacknowledged, no recipient in the
queue ledger that is not final), every mailbox is read over IMAP and the Message-IDs are counted.

Size: MAILFLOW_CHAOS_MESSAGES (default 3000) spread over MAILFLOW_CHAOS_SECONDS (default 120), while
every victim is killed MAILFLOW_CHAOS_ROUNDS (default 3) times; the run prints the figures either way.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter

import pytest

from mailflow.stack import Ports, Stack
from tests.chaos.load import (
    Account,
    Sender,
    add_users,
    stored_ids,
    stored_total,
    stranded,
    stream_state,
    wait_drained,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]

MESSAGES = int(os.environ.get("MAILFLOW_CHAOS_MESSAGES", "3000"))
SECONDS = float(os.environ.get("MAILFLOW_CHAOS_SECONDS", "120"))
ROUNDS = int(os.environ.get("MAILFLOW_CHAOS_ROUNDS", "3"))  # every victim is killed this many times
SENDERS = 8
USERS = 10
DOMAIN = "chaos.test"
VICTIMS = ("smtp-ingress", "queue", "resolver", "delivery", "mailbox-store", "imap-pop3", "nats-server")


class Killer:
    """SIGKILLs the victims in turn, every `interval` seconds, and starts each again after `down` s.
    Runs in the test's main thread: a process started from a thread gets its parent-death signal when
    that thread ends (PR_SET_PDEATHSIG follows the thread), which would take the restarted ones down."""

    def __init__(self, st: Stack, interval: float, down: float = 0.5):
        self.st, self.interval, self.down = st, interval, down
        self.kills: Counter[str] = Counter()
        self.errors: list[str] = []

    def run(self, rounds: int, until) -> None:
        """Kill number k is due at k * interval from the start (at once when restarts made it late)."""
        t0 = time.monotonic()
        for k, victim in enumerate(itertools.chain.from_iterable(itertools.repeat(VICTIMS, rounds)), 1):
            deadline = t0 + k * self.interval
            while time.monotonic() < deadline:
                if until():
                    return
                time.sleep(0.1)
            try:
                if victim == "nats-server":
                    self.st.nats.kill()  # SIGKILL; JetStream's files stay
                    time.sleep(self.down)
                    self.st.nats.start()
                else:
                    self.st.kill(victim)
                    time.sleep(self.down)
                    self.st.start_service(victim, timeout=60)
                self.kills[victim] += 1
            except Exception as exc:  # a restart that failed is a finding; the check at the end says so
                self.errors.append(f"{victim}: {type(exc).__name__}: {exc}")


def test_kill_9_everything_under_load_loses_and_duplicates_nothing(tmp_path):
    env = {
        "MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.5",
        "MAILFLOW_QUEUE_FIRST_RETRY_S": "2",  # deferred by a killed store: retried soon, not in a minute
        "MAILFLOW_QUEUE_MAX_RETRY_S": "10",
    }
    started = time.monotonic()
    with Stack(tmp_path, Ports.free(), env=env) as st:
        add_users(st, USERS, DOMAIN)

        send_started = time.monotonic()
        # MESSAGES/SECONDS a second while the killer goes ROUNDS times through the victims; sending stops
        # when the killer is through (later than SECONDS when restarts were slow: the load goes on).
        sender = Sender(st, 3 * MESSAGES, 3 * SECONDS, users=USERS, domain=DOMAIN, threads=SENDERS, rate=MESSAGES / SECONDS)
        sender.start()
        killer = Killer(st, interval=SECONDS / (ROUNDS * len(VICTIMS) + 1))
        killer.run(ROUNDS, until=sender.done)
        sender.stop()
        sender.join()
        sent_at = time.monotonic()

        # Whatever died on its own (not by our hand) is a finding too; start it so the check can go on.
        dead = [p.name for p in st.dead()]
        for p in st.dead():
            st.start_service(p.service, p.index)

        wait_drained(st)
        before = stored_total(st, USERS, DOMAIN)
        time.sleep(2.0)  # a late duplicate would show up now
        late = stored_total(st, USERS, DOMAIN) - before
        seen = stored_ids(st, USERS, DOMAIN)
        state = stream_state(st)
        drained_at = time.monotonic()

    outcome = sender.outcome
    account = Account.of(outcome, seen)
    by, lost, duplicated = account.by, account.lost, account.duplicated
    ambiguous_stored = len(by["ambiguous"] & set(seen))
    refused_stored = len(by["refused"] & set(seen))
    print(
        f"\nchaos: {len(outcome)} messages in {sent_at - send_started:.0f} s: {len(by['acked'])} acked, "
        f"{len(by['refused'])} refused {dict(sender.codes - Counter({250: sender.codes[250]}))}, "
        f"{len(by['ambiguous'])} ambiguous ({ambiguous_stored} of them stored), {len(by['unsent'])} unsent; "
        f"refused but stored {refused_stored}\n"
        f"chaos: kills {dict(killer.kills)} ({sum(killer.kills.values())} in all); died on their own: {dead}\n"
        f"chaos: lost {len(lost)}, duplicated {sum(n - 1 for n in duplicated.values())}, "
        f"stored {sum(seen.values())}; drained {drained_at - sent_at:.0f} s after sending; "
        f"total {drained_at - started:.0f} s; streams {state}"
    )
    assert not killer.errors, killer.errors
    assert all(killer.kills[v] == ROUNDS for v in VICTIMS), f"not every process was killed {ROUNDS} times: {dict(killer.kills)}"
    assert not dead, f"died without being killed: {dead}"
    account.check()
    assert not stranded(state), state
    assert late == 0, f"{late} messages stored after the queue had drained"
    assert len(by["acked"]) >= len(outcome) // 2, "most messages should get through"
