"""Issue 12 items 1 and 6 over the real store and NATS (SQLite and PostgreSQL): deleting a user, changing
its password or disabling it ends every IMAP session (SELECTed, IDLE, authenticated) and POP3 session of
that user within a second, forgets its cached logins, and the old password or token never reaches a
user created afterwards, not even one with the same address."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest
from imaptest import Raw, Running, make_message, settings_for

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.store.client import SessionExpired, StoreClient

_n = itertools.count(1)


@pytest.fixture
def admin(stack):
    with httpx.Client(
        base_url=stack.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: stack.admin_token}, timeout=30
    ) as c:
        yield c


def new_user(admin, name: str, password: str) -> str:
    address = f"{name}{next(_n)}@example.test"
    r = admin.post("/admin/users", json={"address": address, "password": password})
    assert r.status_code == 201, r.text
    return address


def imap(srv, user: str, password: str, *then: str) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a1", f"LOGIN {user} {password}")[-1].startswith(b"a1 OK")
    for i, command in enumerate(then, 2):
        assert c.cmd(f"a{i}", command)[-1].startswith(f"a{i} OK".encode())
    return c


def idling(srv, user: str, password: str) -> Raw:
    c = imap(srv, user, password, "SELECT INBOX")
    c.send("i1 IDLE")
    assert c.line() == b"+ idling"
    return c


def pop3(srv, user: str, password: str) -> tuple[Raw, bytes]:
    c = Raw("127.0.0.1", srv.port("pop3"))
    assert c.line().startswith(b"+OK")
    c.send(f"USER {user}")
    assert c.line().startswith(b"+OK")
    c.send(f"PASS {password}")
    return c, c.line()


def ended(c: Raw, since: float, first: bytes = b"* BYE") -> bytes:
    """The server said goodbye within a second of `since` and closed the connection."""
    c.sock.settimeout(max(0.05, since + 1.0 - time.monotonic()))
    line = c.line()
    while not line.startswith(first):  # e.g. an untagged response written just before
        line = c.line()
    assert time.monotonic() - since < 1.0, "took longer than a second"
    c.sock.settimeout(2)
    assert c.closed()
    return line


def imap_login_fails(srv, user: str, password: str) -> None:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a1", f"LOGIN {user} {password}")[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    c.close()


def cached_logins(srv, user: str) -> int:
    return sum(p.address == user for p in srv.server.ctx.auth.cache.principals())


def test_deleted_user_sessions_end_and_nothing_of_it_reaches_the_next_user(srv, stack, admin):
    a = new_user(admin, "a", "a-pw")
    srv.deliver(a, make_message("for a"))
    old = srv.call(srv.store.authenticate(a, "a-pw"))
    sessions = [idling(srv, a, "a-pw"), imap(srv, a, "a-pw", "SELECT INBOX"), imap(srv, a, "a-pw")]
    pop, ok = pop3(srv, a, "a-pw")
    assert ok.startswith(b"+OK") and cached_logins(srv, a) >= 1

    assert admin.delete(f"/admin/users/{a}").status_code == 204
    t0 = time.monotonic()
    for c in sessions:
        assert b"password or status changed" in ended(c, t0)
    assert b"[AUTH]" in ended(pop, t0, b"-ERR")
    assert cached_logins(srv, a) == 0

    b = new_user(admin, "b", "b-pw")  # on SQLite without AUTOINCREMENT, b got a's id
    a_again = a  # deleted and created again: a new identity too
    assert admin.post("/admin/users", json={"address": a_again, "password": "a-new-pw"}).status_code == 201
    srv.deliver(b, make_message("for b"))
    srv.deliver(a_again, make_message("for the new a"))
    for address, password in ((b, "b-pw"), (a_again, "a-new-pw")):
        p = srv.call(srv.store.authenticate(address, password))
        assert p.user_id > old.user_id  # a new identity: a's events, sessions and logins are not its
    imap_login_fails(srv, a, "a-pw")  # the old password finds nobody, however fresh the cache was
    pop, answer = pop3(srv, a, "a-pw")
    assert answer.startswith(b"-ERR [AUTH]")
    with pytest.raises(SessionExpired):  # the old token shows nobody's INBOX
        srv.call(srv.store.select(old, "INBOX"))
    c = imap(srv, b, "b-pw")
    assert b"* 1 EXISTS" in c.cmd("s", "SELECT INBOX")
    assert any(b"Subject: for b" in x for x in c.cmd("f", "FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))


def test_password_change_ends_sessions_and_the_old_password_fails_at_once(srv, stack, admin):
    a = new_user(admin, "p", "old-pw")
    sessions = [idling(srv, a, "old-pw"), imap(srv, a, "old-pw", "SELECT INBOX"), imap(srv, a, "old-pw")]
    pop, ok = pop3(srv, a, "old-pw")
    assert ok.startswith(b"+OK")

    assert admin.put(f"/admin/users/{a}/password", json={"password": "new-pw"}).status_code == 204
    t0 = time.monotonic()
    for c in sessions:
        ended(c, t0)
    ended(pop, t0, b"-ERR")
    imap_login_fails(srv, a, "old-pw")
    pop, answer = pop3(srv, a, "old-pw")
    assert answer.startswith(b"-ERR [AUTH]")
    # the new password works (the revoked POP3 session's maildrop lock went with it), and its sessions
    # survive a late copy of the same revocation
    pop, answer = pop3(srv, a, "new-pw")
    assert answer.startswith(b"+OK")
    fresh = imap(srv, a, "new-pw", "SELECT INBOX")
    p = srv.call(srv.store.authenticate(a, "new-pw"))
    assert srv.call(_revoke(srv, p.user_id, p.generation)) == 0
    assert fresh.cmd("n", "NOOP")[-1].startswith(b"n OK")


async def _revoke(srv, user_id: int, generation: int) -> int:
    return srv.server.revoker.revoke(user_id, generation, "password")


def test_disabled_user_sessions_end_logins_fail_and_mail_still_arrives(srv, stack, admin):
    a = new_user(admin, "d", "d-pw")
    sessions = [idling(srv, a, "d-pw"), imap(srv, a, "d-pw")]
    pop, _ = pop3(srv, a, "d-pw")

    assert admin.post(f"/admin/users/{a}/disable").status_code == 204
    t0 = time.monotonic()
    for c in sessions:
        ended(c, t0)
    ended(pop, t0, b"-ERR")
    imap_login_fails(srv, a, "d-pw")
    pop, answer = pop3(srv, a, "d-pw")
    assert answer.startswith(b"-ERR [AUTH]")
    srv.deliver(a, make_message("while disabled"))  # a disabled user still receives mail

    assert admin.post(f"/admin/users/{a}/enable").status_code == 204
    c = imap(srv, a, "d-pw")
    assert b"* 1 EXISTS" in c.cmd("s", "SELECT INBOX")
    pop, answer = pop3(srv, a, "d-pw")
    assert answer.startswith(b"+OK Logged in, 1 messages")


def test_without_the_event_the_sweep_ends_an_idle_session(tmp_path, stack, admin):
    """The revocation event is lost (here: this imap-pop3 has no NATS at all); the periodic check asks
    the store about the tokens it holds and ends the IDLE session and drops the cached login."""
    store = StoreClient(stack.http_url("mailbox-store"), stack.service_token)
    srv = Running(settings_for(tmp_path, revocation_check=0.2), store)
    try:
        a = new_user(admin, "s", "s-pw")
        c = idling(srv, a, "s-pw")
        assert cached_logins(srv, a) == 1
        assert admin.put(f"/admin/users/{a}/password", json={"password": "new"}).status_code == 204
        t0 = time.monotonic()
        assert b"password or status changed" in ended(c, t0)
        assert cached_logins(srv, a) == 0
    finally:
        srv.call(store.close())
        srv.stop()
