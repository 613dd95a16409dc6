"""IMAP FETCH: C concurrent clients, each running sessions that read a whole mailbox.

A session: connect, LOGIN, SELECT INBOX, FETCH 1:* (BODY.PEEK[]), LOGOUT (its completion awaited).
Each client runs --rounds sessions one after another over the mailboxes user<first>..; a fetched
message is an untagged FETCH response read whole, literal included. With --fill, every mailbox is
first topped up to K messages of --size bytes by APPEND (not timed).

Prints one JSON line: sessions, fetched, fetch_s, msgs_per_sec (fetched / fetch_s), mb_per_sec (bytes
of FETCH responses), session_p50_ms, session_p99_ms, errors.
"""

from __future__ import annotations

import asyncio
import time

from tests.bench.load.clients import ImapClient
from tests.bench.load.harness import (
    Errors,
    add_sessions,
    bench_message,
    emit,
    ms,
    parser,
    percentile,
    sessions,
)


async def fill(a, user: str) -> None:
    """APPEND to `user`'s INBOX until it holds K messages."""
    imap = await ImapClient.open(a.host, a.port, a.op_timeout)
    await imap.login(user, a.password)
    for i in range(await imap.select("INBOX"), a.messages):
        await imap.append("INBOX", bench_message(a.size, f"{user}@{a.rcpt_domain}", f"fill-{user}-{i}"))
    await imap.logout()


async def run(a) -> dict:
    deadline = time.monotonic() + a.timeout
    users = [f"user{a.first_user + i}" for i in range(a.users)]
    if a.fill:
        await asyncio.gather(*(fill(a, user) for user in users))
    counted = {"messages": 0, "bytes": 0}

    async def session(user: str) -> None:
        imap = await ImapClient.open(a.host, a.port, a.op_timeout)
        try:
            await imap.login(user, a.password)
            await imap.select("INBOX")
            for line in await imap.command("FETCH 1:* (BODY.PEEK[])"):
                if line.startswith(b"* ") and b" FETCH " in line[:40]:
                    counted["messages"] += 1
                    counted["bytes"] += len(line)
        finally:
            await imap.logout()

    errors = Errors()
    out: dict = dict(tool="imap_fetch", target=f"{a.host}:{a.port}", concurrency=a.concurrency, users=a.users,
                     mailbox_msgs=a.messages)  # fmt: skip
    if a.rounds:
        durations, elapsed = await sessions(a.concurrency, a.rounds, users, session, deadline, errors)
        out.update(
            sessions=len(durations),
            fetched=counted["messages"],
            fetch_s=round(elapsed, 3),
            msgs_per_sec=round(counted["messages"] / elapsed, 1),
            mb_per_sec=round(counted["bytes"] / elapsed / 1e6, 2),
            session_p50_ms=ms(percentile(durations, 50)),
            session_p99_ms=ms(percentile(durations, 99)),
        )
    return out | errors.figures()


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, 2143)
    add_sessions(p, rounds=10)
    p.add_argument("--fill", action="store_true", help="first APPEND until every mailbox holds K messages")
    p.add_argument("--messages", "-k", type=int, default=100, help="K, the mailbox size --fill makes")
    p.add_argument("--size", type=int, default=4096, help="bytes per appended message")
    p.add_argument("--rcpt-domain", default="bench.test", help="the domain in appended messages' To:")
    emit(**asyncio.run(run(p.parse_args(argv))))


if __name__ == "__main__":
    main()
