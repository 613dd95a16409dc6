"""SMTP ingest: N messages over C concurrent connections, each reused for message after message.

Every connection says EHLO once; then per message: MAIL FROM, RCPT TO user<i mod U>@<domain>, DATA,
the message (--size bytes, headers included), RSET: five round trips, lock-step, no PIPELINING.
Message i goes to user<i mod U>. A message counts as accepted when the 250 after its DATA arrives;
its latency runs from the end of DATA written to that 250. After an error (an unexpected reply, a
timeout, a closed connection) the connection is dropped and a new one opened; the run stops after
--max-errors errors or --timeout seconds. With --dkim-key each prepared message is DKIM-signed once, up
front (dkimpy, rsa-sha256, d= the sender's domain, s= --dkim-selector), for a server that verifies.

Prints one JSON line: accepted, errors, elapsed_s, msgs_per_sec (accepted / elapsed), p50_ms, p99_ms.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.bench.load.clients import FAILURES, SmtpClient, wire
from tests.bench.load.harness import SENDER, Errors, bench_message, emit, ms, parser, percentile


async def run(a) -> dict:
    deadline = time.monotonic() + a.timeout
    # one prepared message per recipient: building them stays out of the timed loop
    prepared = [
        wire(signed(bench_message(a.size, f"user{u}@{a.rcpt_domain}", f"ingest-{os.getpid()}-{u}", a.sender), a))
        for u in range(a.users)
    ]
    queue = iter(range(a.messages))
    latencies: list[float] = []
    errors = Errors()

    async def connection() -> None:
        client = None
        for i in queue:
            if time.monotonic() > deadline or len(errors) > a.max_errors:
                break
            u = i % a.users
            try:
                if client is None:
                    client = await SmtpClient.open(a.host, a.port, a.op_timeout)
                    if a.login:
                        await client.login(*a.login.split(":", 1))
                latencies.append(
                    await client.send(a.sender, f"user{u}@{a.rcpt_domain}", prepared[u], not a.no_rset)
                )
            except FAILURES as exc:  # counted; the next message gets a new connection
                errors.add(exc)
                if client:
                    client.abort()
                client = None
        if client:
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - started
    return dict(
        tool="smtp_ingest",
        target=f"{a.host}:{a.port}",
        messages=a.messages,
        concurrency=a.concurrency,
        size=a.size,
        users=a.users,
        accepted=len(latencies),
        elapsed_s=round(elapsed, 3),
        msgs_per_sec=round(len(latencies) / elapsed, 1),
        p50_ms=ms(percentile(latencies, 50)),
        p99_ms=ms(percentile(latencies, 99)),
        **errors.figures(),
    )


def signed(message: bytes, a) -> bytes:
    if not a.dkim_key:
        return message
    import dkim

    key = Path(a.dkim_key).read_bytes()
    domain = a.sender.rpartition("@")[2].encode()
    return dkim.sign(message, a.dkim_selector.encode(), domain, key, include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + message


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, 2025)
    p.add_argument("--messages", "-n", type=int, default=10000)
    p.add_argument("--concurrency", "-c", type=int, default=20, help="concurrent connections")
    p.add_argument("--size", type=int, default=4096, help="bytes per message, headers included")
    p.add_argument("--users", type=int, default=100, help="recipients user0..user<U-1>")
    p.add_argument("--rcpt-domain", default="bench.test")
    p.add_argument("--sender", default=SENDER)
    p.add_argument("--no-rset", action="store_true", help="no RSET between messages")
    p.add_argument("--login", help="USER:PASSWORD: STARTTLS and AUTH PLAIN on each connection first (submission)")
    p.add_argument("--max-errors", type=int, default=100, help="stop after this many errors")
    p.add_argument("--dkim-key", default="", help="PEM private key: DKIM-sign every message with it, once")
    p.add_argument("--dkim-selector", default="bench")
    emit(**asyncio.run(run(p.parse_args(argv))))


if __name__ == "__main__":
    main()
