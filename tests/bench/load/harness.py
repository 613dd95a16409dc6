"""What every load tool shares: the loopback guard, the options, the test message, percentiles,
concurrent sessions and the one JSON line of output.

A target that is not a numeric loopback address (or `localhost`) is refused by the option parser,
before any connection and without a name lookup: load belongs on one's own machine. Every network
wait is bounded by --op-timeout and the whole run by --timeout; a session that fails is counted in
`errors` (the first one is shown in `first_error`) and the run goes on with the next.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import ipaddress
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from tests.bench.load.clients import FAILURES

SENDER = "load@loadgen.test"
# One line of body text: 78 characters and CRLF, none of it a '.' at the start of a line.
FILLER = b"Mailflow load test: the quick brown fox jumps over the lazy dog, 0123456789 ABCD\r\n"


def loopback_host(text: str) -> str:
    """The address to connect to, if `text` is a numeric loopback address or "localhost"."""
    host = "127.0.0.1" if text == "localhost" else text
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"refusing {text!r}: load tools only target numeric loopback addresses (127.0.0.0/8, ::1)"
        )
    return host


def parser(doc: str, port: int) -> argparse.ArgumentParser:
    """The options every tool has; `doc` is the tool's module docstring (shown by --help)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", type=loopback_host, default="127.0.0.1", help="loopback address of the server")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--timeout", type=float, default=300, help="the whole run stops after this many seconds")
    p.add_argument("--op-timeout", type=float, default=30, help="the longest wait for one reply, seconds")
    return p


def add_sessions(p: argparse.ArgumentParser, rounds: int) -> None:
    """Options of the tools that run C concurrent clients over a set of mailboxes."""
    p.add_argument("--concurrency", "-c", type=int, default=10, help="concurrent clients")
    p.add_argument("--rounds", type=int, default=rounds, help="sessions per client")
    p.add_argument("--users", type=int, default=10, help="mailboxes user<first>..user<first+users-1>")
    p.add_argument("--first-user", type=int, default=0)
    p.add_argument("--password", default="pw")


def bench_message(size: int, rcpt: str, token: str, sender: str = SENDER) -> bytes:
    """A plain RFC 5322 message of `size` bytes, headers included (or just the headers when they are
    longer): CRLF line ends, the last line ended, no line starting with '.'. `token` is in its
    X-Bench-Id and Message-ID, so a reader can find it with SEARCH HEADER."""
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: load test {token}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        f"Message-ID: <{token}@loadgen.test>\r\nX-Bench-Id: {token}\r\n\r\n"
    ).encode()
    room = size - len(head)
    lines = []
    while room > 0:
        n = min(len(FILLER), room)
        if room - n == 1:  # a single byte left over could not end with CRLF: take it into this line
            n -= 1
        n = max(n, 2)
        lines.append(FILLER[: n - 2] + b"\r\n")
        room -= n
    return head + b"".join(lines)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def emit(**figures) -> None:
    """The tool's result: one JSON line on stdout."""
    print(json.dumps(figures), flush=True)


class Errors(list):
    """Errors of a run: counted, the first one kept for the output."""

    def add(self, exc: BaseException) -> None:
        self.append(f"{type(exc).__name__}: {exc}")

    def figures(self) -> dict:
        return {"errors": len(self), **({"first_error": self[0]} if self else {})}


async def sessions(
    concurrency: int,
    rounds: int,
    users: Sequence[str],
    session: Callable[[str], Awaitable[object]],
    deadline: float,
    errors: Errors,
) -> tuple[list[float], float]:
    """`concurrency` clients, each running `session(user)` `rounds` times one after another; client k's
    round r uses users[(k + r * concurrency) % len(users)], so the clients spread over the mailboxes.
    Returns the duration of every session that succeeded and the wall time of the whole phase."""
    durations: list[float] = []

    async def client(k: int) -> None:
        for r in range(rounds):
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            try:
                await session(users[(k + r * concurrency) % len(users)])
            except FAILURES as exc:
                errors.add(exc)
                continue
            durations.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return durations, time.perf_counter() - started
