"""SMTP load for crash and fault tests: threads that each keep one session busy, one message per
transaction with its own Message-ID (msg-<n>@<domain>), and a record of what the client saw of each:
acked (250 after the final dot), refused (a 4xx/5xx reply), ambiguous (the connection broke after the
final dot, before the reply: RFC 1047), unsent (it broke before the final dot was sent). A message is
never sent twice: any second copy in a mailbox is one the stack made.
"""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import re
import smtplib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Stack
from tests.support import wait_for

STREAMS = ("MAIL", "JOBS", "RESULTS")

BODY = ("c" * 70 + "\r\n") * 12


class Lost(Exception):
    """The connection broke; `after_dot` says whether the final dot had been sent."""

    def __init__(self, after_dot: bool):
        self.after_dot = after_dot


class SmtpClient:
    """A plain SMTP client that knows exactly where a transaction broke (smtplib does not say)."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.reply(False)
        self.command(b"EHLO chaos-sender.test", False)

    def reply(self, after_dot: bool) -> int:
        try:
            while True:
                while b"\r\n" not in self.buf:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise Lost(after_dot)
                    self.buf += chunk
                line, self.buf = self.buf.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    return int(line[:3])
        except OSError as exc:
            raise Lost(after_dot) from exc

    def command(self, line: bytes, after_dot: bool = False) -> int:
        try:
            self.sock.sendall(line + b"\r\n")
        except OSError as exc:
            raise Lost(False) from exc
        code = self.reply(after_dot)
        if code >= 400:
            raise Refused(code)
        return code

    def send(self, sender: str, rcpt: str, message: bytes) -> None:
        self.command(f"MAIL FROM:<{sender}>".encode())
        self.command(f"RCPT TO:<{rcpt}>".encode())
        self.command(b"DATA")
        try:
            self.sock.sendall(message + b".\r\n")
        except OSError as exc:
            raise Lost(False) from exc  # not all of it reached the server: it cannot have taken it
        code = self.reply(True)
        if code >= 400:
            raise Refused(code)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Refused(Exception):
    def __init__(self, code: int):
        self.code = code


class Sender:
    def __init__(
        self, st: Stack, total: int, seconds: float, users: int, domain: str, threads: int = 8, rate: float = 0.0
    ):
        """Up to `total` messages within `seconds`; with `rate`, at most that many per second in all
        (spread over the time instead of as fast as the stack takes them). `stop()` ends it early."""
        self.st, self.total, self.deadline = st, total, time.monotonic() + seconds
        self.users, self.domain, self.rate = users, domain, rate
        self.t0 = time.monotonic()
        self.stopping = threading.Event()
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.outcome: dict[str, str] = {}  # Message-ID -> acked | refused | ambiguous | unsent
        self.acked_at: list[float] = []  # time.monotonic() of each 250 after the final dot
        self.codes: Counter[int] = Counter()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Sender:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=max(self.deadline - time.monotonic(), 0) + 60)

    def _record(self, mid: str, what: str, code: int | None = None) -> None:
        with self.lock:
            self.outcome[mid] = what
            if what == "acked":
                self.acked_at.append(time.monotonic())
            if code is not None:
                self.codes[code] += 1

    def _connect(self) -> SmtpClient | None:
        """A session that has said 220 and 250 to EHLO; None when the time is up. While smtp-ingress is
        down (killed) this keeps trying: no message is taken before a session is there to send it."""
        while time.monotonic() < self.deadline and not self.stopping.is_set():
            try:
                return SmtpClient(self.st.ports.host, self.st.ports.smtp)
            except (OSError, Lost, Refused):
                time.sleep(0.1)
        return None

    def _run(self) -> None:
        conn: SmtpClient | None = None
        while time.monotonic() < self.deadline and not self.stopping.is_set():
            if conn is None and (conn := self._connect()) is None:
                break
            n = next(self.ids)
            if n >= self.total:
                break
            if self.rate and (wait := self.t0 + n / self.rate - time.monotonic()) > 0:
                if self.stopping.wait(wait):
                    break
            mid = f"msg-{n}"
            rcpt = f"user{n % self.users}@{self.domain}"
            message = (
                f"From: <load@sender.test>\r\nTo: <{rcpt}>\r\nSubject: chaos {n}\r\n"
                f"Message-ID: <{mid}@{self.domain}>\r\n\r\n{BODY}"
            ).encode()
            try:
                conn.send("load@sender.test", rcpt, message)
                self._record(mid, "acked", 250)
                continue
            except Refused as exc:
                self._record(mid, "refused", exc.code)
                if exc.code != 421:
                    try:
                        conn.command(b"RSET")  # a refused RCPT leaves the transaction open
                        continue
                    except (Lost, Refused):
                        pass
            except Lost as exc:
                self._record(mid, "ambiguous" if exc.after_dot else "unsent")
            conn.close()  # gone, or closing after 421: a new session for the next message
            conn = None
        if conn is not None:
            conn.close()

    def count(self, what: str) -> int:
        return sum(1 for v in self.outcome.values() if v == what)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a 250 between `start` and `end` (monotonic): how long the stack took no
        mail around an event in that window. The window ends at the latest when sending did."""
        end = min(end, self.deadline)
        times = [start, *sorted(t for t in self.acked_at if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


class Prober:
    """Calls `probe` (e.g. a new SMTP session: greeting, EHLO, QUIT) every `interval` seconds in a thread
    and notes when it failed; `longest_outage` says for how long in a row, within a window."""

    def __init__(self, probe, interval: float = 0.2):
        self.probe, self.interval = probe, interval
        self.failed: list[tuple[float, float]] = []  # (tried at, failed at) of each failed probe
        self.tries = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            tried = time.monotonic()
            self.tries += 1
            try:
                self.probe()
            except Exception:
                self.failed.append((tried, time.monotonic()))

    def longest_outage(self, start: float, end: float) -> float:
        """From the first to the end of the last of a run of failed probes in [start, end]: 0 if none failed."""
        longest, run_start, last_end = 0.0, None, None
        for tried, failed in sorted(f for f in self.failed if start <= f[0] <= end):
            if run_start is None or tried - last_end > 2 * self.interval + 1.0:
                run_start = tried
            last_end = failed
            longest = max(longest, last_end - run_start)
        return longest


def session_probers(st: Stack, imap_user: str, password: str = "pw") -> dict[str, Prober]:
    """Two running Probers: "smtp" opens a new SMTP session (greeting, EHLO), "imap" a new IMAP one
    (LOGIN as `imap_user`, SELECT INBOX), each every 0.2 s, through the stack's ports."""

    def smtp_session() -> None:
        with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=5) as s:
            s.ehlo("probe.test")

    def imap_session() -> None:
        with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=5) as m:
            m.login(imap_user, password)
            m.select("INBOX", readonly=True)
            m.logout()

    return {"smtp": Prober(smtp_session).start(), "imap": Prober(imap_session).start()}


@dataclass
class Account:
    """What became of the messages a Sender sent, against the Message-IDs found in the mailboxes."""

    by: dict[str, set[str]]  # acked | refused | ambiguous | unsent -> Message-IDs
    lost: list[str]  # acked, never stored
    duplicated: dict[str, int]  # stored more than once
    phantom: list[str]  # stored although never (completely) sent

    @classmethod
    def of(cls, outcome: dict[str, str], seen: Counter[str]) -> Account:
        by = {k: {m for m, v in outcome.items() if v == k} for k in ("acked", "refused", "ambiguous", "unsent")}
        return cls(
            by,
            sorted(by["acked"] - set(seen)),
            {m: n for m, n in seen.items() if n > 1},
            sorted(m for m in seen if m not in outcome or outcome[m] == "unsent"),
        )

    def check(self) -> None:
        assert not self.lost, f"acknowledged but not stored: {self.lost[:20]}"
        assert not self.duplicated, f"stored more than once: {dict(list(self.duplicated.items())[:20])}"
        assert not self.phantom, f"stored although never (completely) sent: {self.phantom[:20]}"


def wait_drained(st: Stack, timeout: float = 300) -> None:
    """Until every consumer of MAIL, JOBS and RESULTS has nothing pending and the ledger nothing open."""

    def drained() -> bool:
        try:
            return not stranded(stream_state(st)) and ledger_open(st) == 0
        except Exception:
            return False

    wait_for(drained, timeout=timeout, interval=1.0, what="queue drained (streams and ledger)")


async def _stream_state(url: str, login: dict[str, str]) -> dict[str, dict[str, tuple[int, int]]]:
    """{stream: {consumer: (num_pending, num_ack_pending)}} for every consumer of the streams (read as the queue)."""
    from mailflow import natsconn

    nc = await natsconn.connect(url, "queue", **login)
    try:
        js = nc.jetstream()
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for stream in STREAMS:
            out[stream] = {c.name: (c.num_pending, c.num_ack_pending) for c in await js.consumers_info(stream)}
        return out
    finally:
        await natsconn.close(nc)


def stream_state(st: Stack) -> dict[str, dict[str, tuple[int, int]]]:
    return asyncio.run(_stream_state(st.nats_url, st.nats_login("queue")))


def stranded(state: dict[str, dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    return {f"{s}/{c}": v for s, cs in state.items() for c, v in cs.items() if v != (0, 0)}


def ledger_open(st: Stack) -> int:
    """Messages the queue ledger still has a non-final recipient of."""
    r = httpx.get(st.http_url("queue") + "/queue/counts", headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30)
    r.raise_for_status()
    return int(r.json()["messages"])


def add_users(st: Stack, users: int, domain: str) -> None:
    """Domain `domain` with user0..user<users-1>, password "pw"."""
    st.cli("domain", "add", domain)
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
        for i in range(users):
            c.post("/admin/users", json={"address": f"user{i}@{domain}", "password": "pw"}).raise_for_status()


def stored_ids(st: Stack, users: int, domain: str) -> Counter[str]:
    """How often each msg-<n> Message-ID is in the users' INBOXes, read over IMAP."""
    pattern = re.compile(rb"<(msg-\d+)@" + re.escape(domain.encode()) + rb">")
    seen: Counter[str] = Counter()
    for i in range(users):
        with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=60) as m:
            m.login(f"user{i}@{domain}", "pw")
            _, data = m.select("INBOX", readonly=True)
            if int(data[0]) == 0:
                continue
            _, got = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for part in got:
                if isinstance(part, tuple):
                    seen.update(x.decode() for x in pattern.findall(part[1]))
    return seen


def stored_total(st: Stack, users: int, domain: str) -> int:
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
        return sum(c.get(f"/admin/users/user{i}@{domain}").json()["messages"] for i in range(users))
