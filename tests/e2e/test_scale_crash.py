"""Issue 4 §6: scale and crash. Three delivery processes share one stream and deliver 1,000 messages
exactly once; `kill -9` of delivery in the middle of a batch, then a restart, still gives exactly
once; a nats-server killed and restarted (JetStream files kept) loses nothing that was accepted.

"Exactly once" is checked in the mailboxes: every message carries X-Seq, every user's mailbox is read
over IMAP, and each sequence number must be there once (the store's own count must agree).
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

USERS = 10
SEQ = re.compile(rb"X-Seq: (\d+)")
BODY = ("x" * 76 + "\r\n") * 26  # ~2 KB in lines SMTP accepts


@contextlib.contextmanager
def started(tmp_path, **kw) -> Iterator[Stack]:
    st = Stack(tmp_path, Ports.free(), env={"MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.5"}, **kw).start()
    try:
        yield prepare(st)
    finally:
        st.stop()


def prepare(st: Stack) -> Stack:
    st.cli("domain", "add", "bench.test")
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
        for i in range(USERS):
            c.post("/admin/users", json={"address": f"user{i}@bench.test", "password": "pw"}).raise_for_status()
    return st


class Sender:
    """Threads sending X-Seq-numbered messages over SMTP; a message is retried until it gets a 250."""

    def __init__(self, st: Stack, seqs: range, threads: int = 8):
        self.st, self.todo = st, list(seqs)
        self.lock = threading.Lock()
        self.acked: set[int] = set()
        self.failed_attempts: Counter[int] = Counter()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Sender:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float = 240) -> None:
        for t in self.threads:
            t.join(timeout)
        assert not self.todo, f"{len(self.todo)} messages never accepted: {self.errors[-3:]}"

    def _next(self) -> int | None:
        with self.lock:
            return self.todo.pop() if self.todo else None

    def _run(self) -> None:
        conn = None
        seq = self._next()
        deadline = time.monotonic() + 240
        while seq is not None and time.monotonic() < deadline:
            rcpt = f"user{seq % USERS}@bench.test"
            raw = f"From: <load@sender.test>\r\nTo: <{rcpt}>\r\nSubject: seq {seq}\r\nX-Seq: {seq}\r\n\r\n{BODY}".encode()
            try:
                if conn is None:
                    conn = smtplib.SMTP(self.st.ports.host, self.st.ports.smtp, timeout=30)
                    conn.ehlo("sender.test")
                conn.sendmail("load@sender.test", [rcpt], raw)
                with self.lock:
                    self.acked.add(seq)
                seq = self._next()
            except (smtplib.SMTPException, OSError) as exc:
                self.failed_attempts[seq] += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                pass


def stored_counts(st: Stack) -> dict[str, int]:
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
        return {f"user{i}": c.get(f"/admin/users/user{i}@bench.test").json()["messages"] for i in range(USERS)}


def delivered_seqs(st: Stack) -> Counter[int]:
    seen: Counter[int] = Counter()
    for i in range(USERS):
        with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=60) as m:
            m.login(f"user{i}@bench.test", "pw")
            _, data = m.select("INBOX")
            if int(data[0]) == 0:
                continue
            _, got = m.fetch("1:*", "(BODY.PEEK[])")
            for part in got:
                if isinstance(part, tuple):
                    seen.update(int(s) for s in SEQ.findall(part[1]))
    return seen


def wait_delivered(st: Stack, n: int, timeout: float = 180) -> None:
    wait_for(lambda: sum(stored_counts(st).values()) >= n, timeout=timeout, interval=0.5, what=f"{n} messages stored")
    time.sleep(1.0)  # anything extra (a duplicate) would show up now


def assert_exactly_once(st: Stack, sender: Sender) -> None:
    seen = delivered_seqs(st)
    missing = sender.acked - set(seen)
    assert not missing, f"accepted but not delivered: {sorted(missing)[:20]}"
    dups = {s: n for s, n in seen.items() if n > 1}
    # a second copy may only come from a second SMTP transaction the sender made after an error
    assert all(sender.failed_attempts[s] >= n - 1 for s, n in dups.items()), f"duplicates: {dups}"
    assert sum(stored_counts(st).values()) == sum(seen.values())


def test_three_delivery_processes_share_1000_messages_exactly_once(tmp_path):
    with started(tmp_path, delivery_instances=3) as st:
        sender = Sender(st, range(1000)).start()
        sender.join()
        wait_delivered(st, 1000)
        seen = delivered_seqs(st)
        assert sorted(seen) == list(range(1000)) and set(seen.values()) == {1}
        per_process = []
        for (service, _i), proc in st.procs.items():
            if service == "delivery":
                text = httpx.get(f"http://{st.ports.host}:{proc.http_port}/metrics").text
                n = sum(float(v) for v in re.findall(r'mailflow_delivery_recipients_total\{outcome="delivered",route="local"\} ([0-9.e+]+)', text))
                per_process.append(n)
        assert len(per_process) == 3 and all(n > 0 for n in per_process), per_process
        assert sum(per_process) >= 1000


def test_kill_9_delivery_mid_batch_then_restart(tmp_path):
    with started(tmp_path) as st:
        sender = Sender(st, range(600)).start()
        wait_for(lambda: sum(stored_counts(st).values()) >= 50, timeout=60, interval=0.05, what="deliveries under way")
        st.kill("delivery")  # SIGKILL, in the middle of whatever batch it had
        killed_at = sum(stored_counts(st).values())
        sender.join()
        assert killed_at < 600
        st.start_service("delivery")
        wait_delivered(st, 600)
        assert_exactly_once(st, sender)


def test_nats_server_killed_and_restarted_loses_nothing(tmp_path):
    with started(tmp_path) as st:
        sender = Sender(st, range(400)).start()
        wait_for(lambda: len(sender.acked) >= 100, timeout=60, interval=0.05, what="mail flowing")
        st.nats.kill()  # SIGKILL: JetStream's files stay on disk
        time.sleep(1.0)
        st.nats.start()
        sender.join()
        wait_delivered(st, 400, timeout=240)
        assert_exactly_once(st, sender)
        assert not st.dead(), [p.service for p in st.dead()]
