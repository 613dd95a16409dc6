"""End-to-end latency: M messages, one at a time, each timed from MAIL FROM until it is visible over IMAP.

One SMTP connection sends to <user>@<domain>; one IMAP session of that user has INBOX selected. For
each message t0 is taken just before MAIL FROM is written; the transaction ends with the 250 after
DATA and a RSET (as the peer baseline's tool did, so its figures compare), and the message carries a
fresh token in its X-Bench-Id header. "Visible" depends on --mode:
  poll  NOOP and UID SEARCH HEADER X-Bench-Id <token>, written together, every --interval seconds
        after the 250 (the first poll right away), until the search returns a UID (whichever of
        the two commands' completions it arrives before);
  idle  the session is in IDLE before MAIL FROM; visible when an untagged EXISTS reports more
        messages than before, then DONE (a client shown new mail by push).
A message not visible within --op-timeout counts as an error and the next one is sent; a broken
connection ends the run.

Prints one JSON line: measured, errors, p50_s, p99_s, max_s (seconds from MAIL FROM) and accept_p50_s
(end of DATA to 250).
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.bench.load.clients import FAILURES, ImapClient, ReplyError, SmtpClient, quoted, wire
from tests.bench.load.harness import SENDER, Errors, bench_message, emit, parser, percentile


async def visible_by_polling(imap: ImapClient, token: str, t0: float, a) -> bool:
    while time.perf_counter() - t0 < a.op_timeout:
        noop = imap.send("NOOP")
        search = imap.send(f"UID SEARCH HEADER X-Bench-Id {quoted(token)}")
        if any(line.startswith(b"* SEARCH ") for line in await imap.finish(noop, search)):
            return True
        await asyncio.sleep(a.interval)
    return False


async def visible_by_idle(imap: ImapClient, exists: int) -> int:
    """Wait in IDLE for an EXISTS beyond `exists`; returns the new count (the caller ends IDLE)."""
    while True:
        words = (await imap.response()).split()
        if len(words) == 3 and words[0] == b"*" and words[2] == b"EXISTS" and int(words[1]) > exists:
            return int(words[1])


async def run(a) -> dict:
    deadline = time.monotonic() + a.timeout
    rcpt = f"{a.user}@{a.rcpt_domain}"
    smtp = await SmtpClient.open(a.host, a.port, a.op_timeout)
    imap = await ImapClient.open(a.host, a.imap_port, a.op_timeout)
    await imap.login(a.user, a.password)
    exists = await imap.select("INBOX")
    latencies: list[float] = []
    accepts: list[float] = []
    errors = Errors()
    try:
        for i in range(a.messages):
            if time.monotonic() > deadline:
                break
            token = f"e2e-{os.getpid()}-{i}-{time.time_ns()}"
            data = wire(bench_message(a.size, rcpt, token, a.sender))
            if a.mode == "idle":
                idle = imap.send("IDLE")
                if not (await imap.response()).startswith(b"+"):
                    raise ReplyError("IDLE refused")
            t0 = time.perf_counter()
            accepts.append(await smtp.send(a.sender, rcpt, data))
            if a.mode == "idle":
                exists = await asyncio.wait_for(visible_by_idle(imap, exists), a.op_timeout)
                latencies.append(time.perf_counter() - t0)
                imap.writer.write(b"DONE\r\n")
                await imap.finish(idle)
            elif await visible_by_polling(imap, token, t0, a):
                latencies.append(time.perf_counter() - t0)
            else:
                errors.add(TimeoutError(f"message {i} not visible after {a.op_timeout} s"))
    except FAILURES as exc:  # the connections are not usable any more: the run ends here
        errors.add(exc)
    await smtp.quit()
    await imap.logout()

    def seconds(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return dict(
        tool="e2e_latency",
        mode=a.mode,
        target=f"{a.host}:{a.port}->{a.host}:{a.imap_port}",
        messages=a.messages,
        measured=len(latencies),
        size=a.size,
        p50_s=seconds(percentile(latencies, 50)),
        p99_s=seconds(percentile(latencies, 99)),
        max_s=seconds(max(latencies, default=None)),
        accept_p50_s=seconds(percentile(accepts, 50)),
        **errors.figures(),
    )


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, 2025)
    p.add_argument("--imap-port", type=int, default=2143)
    p.add_argument("--messages", "-n", type=int, default=200)
    p.add_argument("--mode", choices=("poll", "idle"), default="poll")
    p.add_argument("--interval", type=float, default=0.002, help="seconds between polls")
    p.add_argument("--size", type=int, default=4096, help="bytes per message, headers included")
    p.add_argument("--user", default="user99", help="IMAP login; mail goes to <user>@<rcpt-domain>")
    p.add_argument("--password", default="pw")
    p.add_argument("--rcpt-domain", default="bench.test")
    p.add_argument("--sender", default=SENDER)
    emit(**asyncio.run(run(p.parse_args(argv))))


if __name__ == "__main__":
    main()
