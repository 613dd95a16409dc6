"""\\Recent as RFC 3501 defines it (§2.3.2, §6.3.1, §6.3.2, §6.3.10, §7.3.2), with two imap-pop3 replicas
on one store: a message is \\Recent in exactly one session, the first to SELECT the mailbox after it came
(or to learn of it with the mailbox selected); EXAMINE and STATUS show it and leave it. FETCH FLAGS and
SEARCH RECENT/NEW/OLD say the same as the RECENT counts."""

from __future__ import annotations

import pytest
from imaptest import Raw, Running, make_message, settings_for


@pytest.fixture
def replicas(tmp_path, store):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Running(settings_for(tmp_path / "a"), store), Running(settings_for(tmp_path / "b"), store)
    yield a, b
    a.stop()
    b.stop()


def login(srv) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    return c


def recent_line(lines: list[bytes]) -> bytes:
    return next(ln for ln in lines if ln.endswith(b" RECENT"))


def test_recent_belongs_to_the_first_session_that_selects(replicas):
    a, b = replicas
    for i in range(2):
        a.deliver("alice@example.test", make_message(f"m{i}"))
    x, y, z = login(a), login(b), login(b)
    assert x.cmd("s1", "STATUS INBOX (MESSAGES RECENT)")[0] == b'* STATUS "INBOX" (MESSAGES 2 RECENT 2)'
    # EXAMINE sees them \Recent and leaves them so
    assert recent_line(z.cmd("e1", "EXAMINE INBOX")) == b"* 2 RECENT"
    assert z.cmd("e2", "FETCH 1:2 FLAGS")[:2] == [
        b"* 1 FETCH (FLAGS (\\Recent))",
        b"* 2 FETCH (FLAGS (\\Recent))",
    ]
    assert z.cmd("e3", "SEARCH RECENT")[0] == b"* SEARCH 1 2"
    assert y.cmd("s2", "STATUS INBOX (RECENT)")[0] == b'* STATUS "INBOX" (RECENT 2)'
    # the first SELECT (replica a) takes them; a SELECT after it (replica b) has none
    assert recent_line(x.cmd("s3", "SELECT INBOX")) == b"* 2 RECENT"
    assert recent_line(y.cmd("s4", "SELECT INBOX")) == b"* 0 RECENT"
    assert x.cmd("s5", "SEARCH NEW")[0] == b"* SEARCH 1 2"
    assert y.cmd("s6", "SEARCH RECENT")[0] == b"* SEARCH"
    assert y.cmd("s7", "SEARCH OLD")[0] == b"* SEARCH 1 2"
    assert y.cmd("s8", "FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS ())"
    assert z.cmd("e4", "FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))"  # its view stays as it was
    assert z.cmd("e5", "STATUS INBOX (RECENT)")[0] == b'* STATUS "INBOX" (RECENT 0)'
    assert recent_line(z.cmd("e6", "EXAMINE INBOX")) == b"* 0 RECENT"
    # new mail while both have INBOX selected: the one that learns of it first has it \Recent
    b.deliver("alice@example.test", make_message("new"))
    assert y.cmd("n1", "NOOP")[:2] == [b"* 3 EXISTS", b"* 1 RECENT"]
    assert x.cmd("n2", "NOOP")[:2] == [b"* 3 EXISTS", b"* 2 RECENT"]
    assert y.cmd("n3", "FETCH 3 FLAGS")[0] == b"* 3 FETCH (FLAGS (\\Recent))"
    assert x.cmd("n4", "FETCH 3 FLAGS")[0] == b"* 3 FETCH (FLAGS ())"
    assert y.cmd("n5", "SEARCH NEW")[0] == b"* SEARCH 3"
    assert x.cmd("n6", "SEARCH NEW")[0] == b"* SEARCH 1 2"
    assert z.cmd("n7", "NOOP")[:2] == [b"* 3 EXISTS", b"* 0 RECENT"]  # EXAMINE after the claim
    # a message no one has seen yet: STATUS counts it; the session that reselects takes it
    a.deliver("alice@example.test", make_message("later"))
    assert z.cmd("s9", "STATUS INBOX (RECENT)")[0] == b'* STATUS "INBOX" (RECENT 1)'
    assert recent_line(z.cmd("t1", "SELECT INBOX")) == b"* 1 RECENT"
    assert x.cmd("t2", "NOOP")[:2] == [b"* 4 EXISTS", b"* 2 RECENT"]  # not x's: still its first two
    for c in (x, y, z):
        c.close()


def test_idle_sessions_on_two_replicas_share_one_new_message(replicas):
    """Sessions that all learn of a message at once (IDLE on both replicas): the store gives it to one."""
    a, b = replicas
    sessions = [login(a), login(a), login(b), login(b)]
    for i, c in enumerate(sessions):
        assert recent_line(c.cmd(f"s{i}", "SELECT INBOX")) == b"* 0 RECENT"
        c.send(f"i{i} IDLE")
        assert c.line().startswith(b"+")
    a.deliver("alice@example.test", make_message("pushed"))
    counts = []
    for c in sessions:
        assert c.line() == b"* 1 EXISTS"
        counts.append(c.line())
        c.send("DONE")
        assert c.line().endswith(b"OK IDLE terminated")
    assert sorted(counts) == [b"* 0 RECENT"] * 3 + [b"* 1 RECENT"]
    for c in sessions:
        c.close()


def test_new_messages_wait_while_the_store_cannot_say_who_has_them_recent(srv, store):
    """A failed \\Recent claim is a failed look at the mailbox: the new message is shown at the next
    one, \\Recent then; a session the store no longer accepts ends with BYE, as for `changes`."""
    from mailflow.errors import ServiceUnavailable
    from mailflow.store.client import SessionExpired

    c = login(srv)
    assert recent_line(c.cmd("s1", "SELECT INBOX")) == b"* 0 RECENT"
    real = store.claim_recent
    failures = [ServiceUnavailable("store down"), SessionExpired("session")]

    async def failing(*args, **kw):
        raise failures.pop(0)

    store.claim_recent = failing
    try:
        srv.deliver("alice@example.test", make_message("one"))
        assert c.cmd("n1", "NOOP") == [b"n1 OK NOOP completed"]  # not shown yet
        store.claim_recent = real
        assert c.cmd("n2", "NOOP") == [b"* 1 EXISTS", b"* 1 RECENT", b"n2 OK NOOP completed"]
        store.claim_recent = failing
        srv.deliver("alice@example.test", make_message("two"))
        c.send("n3 NOOP")
        assert c.line().startswith(b"* BYE ")
    finally:
        store.claim_recent = real
    c.close()
