"""SORT and THREAD benchmark (issue 18.2): one mailbox of 10,000 messages in threads, then Dovecot, the
same messages and commands.

The mailbox: 10,000 messages of about 1 KiB in 1,500 threads (replies with Re:, some Fwd: and [list]
tags, References chains up to 12 deep, a missing first message now and then, Date: headers in several
zones, a few without one), 300 senders; generated from a fixed seed, so both servers get the same bytes.
Both are filled over IMAP (MULTIAPPEND of up to 60 KB a command, LITERAL+), then in one session each command below is
timed from sending it to reading its tagged OK, in rounds that alternate the commands (the machine is
shared and noisy: the median of the rounds is the figure; the first run, before any cache, is
reported apart); then again with one new message APPENDed (untimed) before each command, so that
nothing either server kept of the mailbox's last state holds ("_new_mail"). The servers' answers are compared: the same order from both says the two read the
RFC the same way on this mail.

    python -m tests.bench.bench_sort [--messages 10000] [--rounds 9]   (make bench ONLY=sort [PEERS=0])

Target: each command < 100 ms on 10,000 messages (Mailflow).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path

from mailflow.stack import Ports, Stack
from tests.bench.common import bench_users, compare, millis, peers, report

COMMANDS = {
    "sort_subject": b"SORT (SUBJECT) UTF-8 ALL",
    "sort_reverse_date": b"SORT (REVERSE DATE) UTF-8 ALL",
    "sort_from_size": b"SORT (FROM REVERSE SIZE) UTF-8 ALL",
    "thread_references": b"THREAD REFERENCES UTF-8 ALL",
    "thread_orderedsubject": b"THREAD ORDEREDSUBJECT UTF-8 ALL",
}
TARGET_MS = 100
ZONES = ["+0000", "+0100", "-0500", "+0530", "-0800", "+0900"]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def mailbox(n: int, seed: int = 5256) -> list[bytes]:
    """n messages in threads, in arrival order."""
    rng = random.Random(seed)
    topics = [
        f"{rng.choice(['Meeting', 'Invoice', 'Release', 'Question', 'Plans', 'Budget'])} {i}"
        for i in range(1500)
    ]
    threads: list[list[str]] = [[] for _ in topics]  # Message-IDs so far, per thread
    out = []
    for i in range(n):
        t = rng.randrange(len(topics))
        ids = threads[t]
        mid = f"<{i}.{t}@bench.test>"
        subject = topics[t]
        refs = ""
        if ids:
            parent = rng.randrange(max(0, len(ids) - 3), len(ids))
            chain = ids[: parent + 1][-12:]
            refs = "References: " + " ".join(chain) + "\r\nIn-Reply-To: " + chain[-1] + "\r\n"
            subject = rng.choice(["Re: ", "RE: ", "Re: Re: ", "Fwd: ", "[team] Re: "]) + subject
        elif rng.random() < 0.1:  # the first message of the thread is not in this mailbox
            refs = f"References: <gone.{t}@bench.test>\r\n"
            subject = "Re: " + subject
        ids.append(mid)
        day = 1 + (i * 28) // n
        date = (
            ""
            if rng.random() < 0.02
            else f"Date: {day} {MONTHS[i % 12]} 2026 {rng.randrange(24):02d}:{rng.randrange(60):02d}:00 {rng.choice(ZONES)}\r\n"
        )
        sender = rng.randrange(300)
        head = (
            f"From: Person {sender} <p{sender}@example{sender % 7}.test>\r\nTo: user1@bench.test\r\n"
            f"Subject: {subject}\r\n{date}Message-ID: {mid}\r\n{refs}MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        )
        out.append((head + "Lorem ipsum dolor sit amet.\r\n" * rng.randrange(10, 40)).encode())
    return out


class Client:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=300)
        self.buf = b""
        self.n = 0
        self.until(b"* OK")

    def until(self, tag: bytes) -> bytes:
        """Everything up to and including the line that starts with `tag` (no literals in between)."""
        pos = 0
        while True:
            while (end := self.buf.find(b"\r\n", pos)) != -1:
                if self.buf.startswith(tag, pos):
                    data, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
                    return data
                pos = end + 2
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def cmd(self, text: bytes) -> tuple[bytes, float]:
        self.n += 1
        tag = b"b%d" % self.n
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        data = self.until(tag + b" ")
        ms = (time.perf_counter() - t0) * 1000
        if not data.rsplit(b"\r\n", 2)[-2].startswith(tag + b" OK"):
            raise RuntimeError(f"{text!r} failed: {data[-300:]!r}")
        return data, ms

    def fill(self, messages: list[bytes], limit: int = 60_000) -> None:
        """MULTIAPPEND (RFC 3502) of up to `limit` bytes and 30 messages a command, literals LITERAL+."""
        batches: list[list[bytes]] = [[]]
        for m in messages:
            if batches[-1] and (sum(map(len, batches[-1])) + len(m) > limit or len(batches[-1]) == 30):
                batches.append([])
            batches[-1].append(m)
        for batch in batches:
            self.n += 1
            tag = b"f%d" % self.n
            parts = [tag + b" APPEND INBOX"]
            for m in batch:
                parts.append(b" {%d+}\r\n" % len(m) + m)
            self.sock.sendall(b"".join(parts) + b"\r\n")
            data = self.until(tag + b" ")
            if tag + b" OK" not in data:
                raise RuntimeError(f"APPEND failed: {data[-300:]!r}")

    def close(self) -> None:
        try:
            self.sock.sendall(b"z LOGOUT\r\n")
        finally:
            self.sock.close()


def answer(data: bytes) -> bytes:
    """The untagged SORT or THREAD line of a reply."""
    for line in data.split(b"\r\n"):
        if line.startswith((b"* SORT", b"* THREAD")):
            return line
    return b""


def measure(host: str, port: int, user: str, messages: list[bytes], rounds: int) -> tuple[dict, dict]:
    c = Client(host, port)
    try:
        c.cmd(f"LOGIN {user} pw".encode())
        t0 = time.perf_counter()
        c.fill(messages)
        fill_s = time.perf_counter() - t0
        data, _ = c.cmd(b"SELECT INBOX")
        if b"* %d EXISTS" % len(messages) not in data:
            raise RuntimeError(f"mailbox not filled: {data[:300]!r}")
        figures: dict = {"messages": len(messages), "fill_s": round(fill_s, 1)}
        answers = {}
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for r in range(rounds + 1):
            for name, text in COMMANDS.items():
                data, ms = c.cmd(text)
                if r == 0:
                    figures[f"{name}_first_ms"] = round(ms, 1)
                    answers[name] = answer(data)
                else:
                    times[name].append(ms)
        for name, values in times.items():
            figures[f"{name}_ms"] = round(statistics.median(values), 1)
        # new mail before each command: nothing the server kept of the mailbox's last state still holds
        extra = mailbox(rounds * len(COMMANDS), seed=5257)
        fresh: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for r in range(rounds):
            for j, (name, text) in enumerate(COMMANDS.items()):
                c.fill([extra[r * len(COMMANDS) + j]])
                c.cmd(b"NOOP")
                fresh[name].append(c.cmd(text)[1])
        for name, values in fresh.items():
            figures[f"{name}_new_mail_ms"] = round(statistics.median(values), 1)
        return figures, answers
    finally:
        c.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=9, help="timed runs of each command (after a first one)")
    a = p.parse_args(argv)
    messages = mailbox(a.messages)
    env = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING"}
    with (
        tempfile.TemporaryDirectory(prefix="mailflow-bench-") as tmp,
        Stack(Path(tmp), Ports.free(), services=("mailbox-store", "imap-pop3"), env=env) as st,
    ):
        bench_users(st, n=2)
        ours, our_answers = measure(st.ports.host, st.ports.imap, "user1", messages, a.rounds)
    report("sort", server="mailflow", **ours)
    theirs = None
    with peers(users=2) as pr:
        if pr is not None:
            theirs, their_answers = measure(pr.ports.host, pr.ports.imap, "user1", messages, a.rounds)
            theirs["same_answers"] = sorted(n for n in COMMANDS if their_answers[n] == our_answers[n])
            report("sort_peers", server="dovecot", **theirs)
    print(f"\n{'figure':<32} {'Mailflow':>10} {'Dovecot':>10}  target")
    for name, value in ours.items():
        other = "-" if theirs is None else theirs.get(name, "-")
        verdict = ""
        if name.endswith("_ms") and not name.endswith(("_first_ms", "_new_mail_ms")):
            verdict = f"{'ok' if value < TARGET_MS else 'MISSED'} (< {TARGET_MS})"
        print(f"{name:<32} {value!s:>10} {other!s:>10}  {verdict}")
    if theirs is not None:
        print(f"identical answers: {', '.join(theirs['same_answers']) or 'none'}")
    for name, text in COMMANDS.items():
        compare(f"{text.decode()} on {a.messages:,} messages (median)", millis(ours[f"{name}_ms"]),
                millis(theirs[f"{name}_ms"]) if theirs else None)  # fmt: skip
        compare(f"{text.decode()} on {a.messages:,} messages, after new mail (median)",
                millis(ours[f"{name}_new_mail_ms"]), millis(theirs[f"{name}_new_mail_ms"]) if theirs else None)  # fmt: skip


if __name__ == "__main__":
    main()
