"""POP3 RETR: C concurrent clients, each running sessions that download a whole maildrop.

A session: connect, USER, PASS, LIST, RETR of every listed message (no DELE, so the maildrop stays
as it is), QUIT. Each client runs --rounds sessions one after another over the mailboxes
user<first>..; they must hold mail already (e.g. `imap_fetch --fill`).

Prints one JSON line: sessions, retrieved, elapsed_s, msgs_per_sec (retrieved / elapsed), mb_per_sec
(bytes of RETR answers), sessions_per_sec, session_p50_ms, session_p99_ms, errors.
"""

from __future__ import annotations

import asyncio
import time

from tests.bench.load.clients import Pop3Client
from tests.bench.load.harness import Errors, add_sessions, emit, ms, parser, percentile, sessions


async def run(a) -> dict:
    deadline = time.monotonic() + a.timeout
    users = [f"user{a.first_user + i}" for i in range(a.users)]
    counted = {"messages": 0, "bytes": 0}

    async def session(user: str) -> None:
        pop3 = await Pop3Client.open(a.host, a.port, a.op_timeout)
        try:
            await pop3.login(user, a.password)
            listing = await pop3.multiline("LIST")
            for entry in listing.splitlines():
                message = await pop3.multiline(f"RETR {int(entry.split()[0])}")
                counted["messages"] += 1
                counted["bytes"] += len(message)
        finally:
            await pop3.quit()

    errors = Errors()
    durations, elapsed = await sessions(a.concurrency, a.rounds, users, session, deadline, errors)
    return dict(
        tool="pop3_retr",
        target=f"{a.host}:{a.port}",
        concurrency=a.concurrency,
        users=a.users,
        sessions=len(durations),
        retrieved=counted["messages"],
        elapsed_s=round(elapsed, 3),
        msgs_per_sec=round(counted["messages"] / elapsed, 1),
        mb_per_sec=round(counted["bytes"] / elapsed / 1e6, 2),
        sessions_per_sec=round(len(durations) / elapsed, 1),
        session_p50_ms=ms(percentile(durations, 50)),
        session_p99_ms=ms(percentile(durations, 99)),
        **errors.figures(),
    )


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, 2110)
    add_sessions(p, rounds=10)
    emit(**asyncio.run(run(p.parse_args(argv))))


if __name__ == "__main__":
    main()
