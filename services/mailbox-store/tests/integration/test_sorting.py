"""SORT and THREAD through the REST API on SQLite and PostgreSQL: the order, the criteria as SEARCH's,
another user's mailbox refused, answers that follow new mail, expunges and not flags, and bodies stored
before migration 0012 (sort keys NULL) sorted the same, their keys then written back once."""

from __future__ import annotations

import pytest

from mailflow.errors import Invalid, NotFound
from mailflow.store import search as s
from mailflow_mailbox_store import sorting

from .conftest import message


def dated(subject: str, day: int, extra: str = "") -> bytes:
    return message(subject, extra=f"X-Day: {day}\r\n" + extra).replace(
        b"Fri, 27 Nov 2026 10:00:00", f"Tue, {day:02d} Dec 2026 10:00:00".encode()
    )


async def test_sort_thread_and_old_bodies(client, people, service):
    alice, bob = people
    for raw in (
        dated("Re: beta", 3, "References: <alpha@elsewhere.test>\r\n"),
        dated("alpha", 1),
        dated("beta", 2),
        dated("Re: alpha", 4, "In-Reply-To: <alpha@elsewhere.test>\r\n"),
    ):
        await client.append(alice, "INBOX", raw)
    mb = (await client.status(alice, "INBOX")).id
    by_subject = [2, 4, 1, 3]  # ALPHA ALPHA BETA BETA, ties in UID order
    assert await client.sort(alice, mb, s.All(), [("subject", False)]) == by_subject
    assert await client.sort(alice, mb, s.All(), [("date", True)]) == [4, 1, 3, 2]
    assert await client.sort(alice, mb, s.Uids(((2, 3),)), [("date", False)]) == [2, 3]
    # one second, one internal date: a tie, in mailbox order even reversed (RFC 5256 §3)
    assert await client.sort(alice, mb, s.Header("subject", "beta"), [("arrival", True)]) == [1, 3]
    threads = [(2, 0), (1, 1), (4, 1), (3, 0)]  # 1 and 4 reply to alpha (2); 3 is a thread of its own
    assert await client.thread(alice, mb, s.All(), "references") == threads
    assert await client.thread(alice, mb, s.All(), "orderedsubject") == [(2, 0), (4, 1), (3, 0), (1, 1)]
    # the answers are remembered per state of the mailbox: new mail and expunges show, flags do not matter
    await client.store_flags(alice, mb, [1], "add", frozenset({"\\Seen"}))
    assert await client.sort(alice, mb, s.All(), [("subject", False)]) == by_subject
    assert await client.sort(alice, mb, s.Flag("\\Seen"), [("subject", False)]) == [1]
    await client.append(alice, "INBOX", dated("aardvark", 5))
    assert await client.sort(alice, mb, s.All(), [("subject", False)]) == [5, *by_subject]
    await client.store_flags(alice, mb, [5], "add", frozenset({"\\Deleted"}))
    assert await client.expunge(alice, mb) == [5]
    assert await client.sort(alice, mb, s.All(), [("subject", False)]) == by_subject
    assert await client.thread(alice, mb, s.All(), "references") == threads
    # new mail that an earlier message refers to: that one moves under it (THREAD after new mail
    # extends what step 1 made before; the same answer as from nothing, after a restart)
    await client.append(alice, "INBOX", dated("Re: gamma", 8, "References: <gamma@elsewhere.test>\r\n"))
    assert await client.thread(alice, mb, s.All(), "references") == [*threads, (6, 0)]
    await client.append(alice, "INBOX", dated("gamma", 7))
    grown = [*threads, (7, 0), (6, 1)]
    assert await client.thread(alice, mb, s.All(), "references") == grown
    for cache in (sorting.ROWS, sorting.RESULTS, sorting.FORESTS):
        cache.clear()
    assert await client.thread(alice, mb, s.All(), "references") == grown
    for uid in (6, 7):
        await client.store_flags(alice, mb, [uid], "add", frozenset({"\\Deleted"}))
    await client.expunge(alice, mb)
    assert await client.thread(alice, mb, s.All(), "references") == threads
    with pytest.raises(NotFound):
        await client.sort(bob, mb, s.All(), [("subject", False)])
    with pytest.raises(NotFound):
        await client.thread(bob, mb, s.All(), "references")
    with pytest.raises(Invalid):
        await client.sort(alice, mb, s.All(), [("colour", False)])
    with pytest.raises(Invalid):
        await client.thread(alice, mb, s.All(), "magic")

    def forget(tx) -> None:  # what a body stored before migration 0012 looks like
        tx.run("UPDATE blobs SET sort_subject = NULL, sort_reply = NULL, sort_sent = NULL, sort_parents = NULL,"
               " sort_message_id = NULL WHERE id IN (SELECT blob_id FROM messages WHERE mailbox_id = :mb)", {"mb": mb})  # fmt: skip

    def missing(tx) -> int:
        return tx.value(
            "SELECT COUNT(*) FROM blobs WHERE sort_subject IS NULL AND id IN"
            " (SELECT blob_id FROM messages WHERE mailbox_id = :mb)",
            {"mb": mb},
        )

    def restart() -> None:  # what a store process that starts after the migration has in memory
        sorting.ROWS.clear()
        sorting.RESULTS.clear()

    db = service.store.db
    await db.write(forget)
    restart()
    assert await db.read(missing) == 4
    assert await client.thread(alice, mb, s.All(), "references") == threads
    assert await db.read(missing) == 0  # written back
    await db.write(forget)
    restart()
    assert await client.sort(alice, mb, s.All(), [("subject", False)]) == by_subject
    assert await db.read(missing) == 0
