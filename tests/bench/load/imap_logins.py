"""IMAP logins: C concurrent clients, each running sessions of connect, LOGIN, LOGOUT.

Each client runs --rounds sessions one after another over the mailboxes user<first>..; a session
counts when LOGIN succeeded and LOGOUT's completion arrived (or 2 s passed). Measures what a server
spends to accept a connection and check a password, as mail clients that poll do all day.

Prints one JSON line: logins, login_s, logins_per_sec, login_p50_ms, login_p99_ms (a whole session),
errors.
"""

from __future__ import annotations

import asyncio
import time

from tests.bench.load.clients import ImapClient
from tests.bench.load.harness import Errors, add_sessions, emit, ms, parser, percentile, sessions


async def run(a) -> dict:
    deadline = time.monotonic() + a.timeout
    users = [f"user{a.first_user + i}" for i in range(a.users)]

    async def session(user: str) -> None:
        imap = await ImapClient.open(a.host, a.port, a.op_timeout)
        try:
            await imap.login(user, a.password)
        finally:
            await imap.logout()

    errors = Errors()
    durations, elapsed = await sessions(a.concurrency, a.rounds, users, session, deadline, errors)
    return dict(
        tool="imap_logins",
        target=f"{a.host}:{a.port}",
        concurrency=a.concurrency,
        users=a.users,
        logins=len(durations),
        login_s=round(elapsed, 3),
        logins_per_sec=round(len(durations) / elapsed, 1),
        login_p50_ms=ms(percentile(durations, 50)),
        login_p99_ms=ms(percentile(durations, 99)),
        **errors.figures(),
    )


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, 2143)
    add_sessions(p, rounds=50)
    emit(**asyncio.run(run(p.parse_args(argv))))


if __name__ == "__main__":
    main()
