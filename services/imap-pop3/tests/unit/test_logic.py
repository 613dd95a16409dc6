"""Pure logic without sockets: the selected-mailbox view, login throttling and cache, POP3 byte-stuffing
and TOP. (SASL PLAIN is mailflow.sasl's: tests/unit/test_sasl.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.store.api import Changes, MailboxStatus, MessageMeta, Principal, Selected
from mailflow.throttle import LoginThrottle
from mailflow_imap_pop3.auth import AuthCache
from mailflow_imap_pop3.imap.syntax import SeqSet
from mailflow_imap_pop3.imap.view import MailboxView
from mailflow_imap_pop3.pop3.maildrop import crlf, dot_stuffed, top

SEEN = frozenset({"\\Seen"})


def status(uidnext=10, modseq=5, n=3) -> MailboxStatus:
    return MailboxStatus(1, "INBOX", 77, uidnext, n, 0, 0, modseq)


def view(uids=(2, 4, 6)) -> MailboxView:
    n = len(uids)
    return MailboxView(
        "INBOX", Selected(status(), list(uids), [frozenset()] * n, [1] * n, {6}), readonly=False
    )


def test_numbering_and_sets():
    v = view()
    assert v.by_seq(SeqSet(((1, 0),))) == [0, 1, 2]
    assert v.by_seq(SeqSet(((3, 2), (1, 1)))) == [0, 1, 2]
    with pytest.raises(ValueError):
        v.by_seq(SeqSet(((4, 4),)))
    assert v.by_uid(SeqSet(((3, 100),))) == [1, 2]
    assert v.by_uid(SeqSet(((100, 0),))) == [2]  # "*" is the largest UID: N:* always names one
    assert v.by_uid(SeqSet(((7, 9),))) == []
    assert v.flags_of(2) == {"\\Recent"}


def test_apply_new_mail_flag_changes_and_expunges():
    v = view()
    ch = Changes(
        status(uidnext=9, modseq=9),
        [MessageMeta(4, SEEN, 7), MessageMeta(8, frozenset({"$Work"}), 8)],
        [2],
    )
    out = v.apply(ch, allow_expunge=True, condstore=False, recent_from=8)  # the store gave us 8
    assert out == [
        b"* 1 EXPUNGE\r\n",
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work)\r\n",
        b"* 1 FETCH (UID 4 FLAGS (\\Seen))\r\n",
        b"* 3 EXISTS\r\n",
        b"* 2 RECENT\r\n",
    ]
    assert v.uids == [4, 6, 8] and v.highestmodseq == 9 and v.uidnext == 10
    assert v.new_top(Changes(status(), [MessageMeta(6, SEEN, 9), MessageMeta(11, SEEN, 10)], [])) == 11
    out = v.apply(Changes(status(uidnext=12), [MessageMeta(11, SEEN, 10)], []), True, False, recent_from=None)
    assert out[-2:] == [b"* 4 EXISTS\r\n", b"* 2 RECENT\r\n"]  # another session has 11
    assert v.flags_of(3) == SEEN and v.flags_of(2) == {"$Work", "\\Recent"}


def test_expunge_waits_while_not_allowed_and_numbers_stay():
    v = view()
    out = v.apply(Changes(status(modseq=6), [], [4]), allow_expunge=False, condstore=False)
    assert out == [] and v.uids == [2, 4, 6] and v.pending_expunge == {4}
    assert v.remove(list(v.pending_expunge)) == [b"* 2 EXPUNGE\r\n"]
    assert v.uids == [2, 6]


def test_expunge_numbers_shift_as_they_are_sent():
    v = view((1, 2, 3, 4, 5))
    assert v.remove([2, 3, 5]) == [b"* 2 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n"]


def test_condstore_reports_modseq_changes_too():
    v = view()
    out = v.apply(Changes(status(modseq=9), [MessageMeta(2, frozenset(), 9)], []), True, condstore=True)
    assert out == [b"* 1 FETCH (UID 2 FLAGS () MODSEQ (9))\r\n"]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_throttle_delays_then_blocks_then_forgets():
    """imap-pop3's configuration of the shared throttle (app.py): free failures, then a doubling tarpit."""
    clock = Clock()
    t = LoginThrottle(free=2, max_failures=5, window=60, max_delay=4, clock=clock)
    delays = [t.failed("192.0.2.1") for _ in range(4)]
    assert delays == [0, 0, 1, 2]
    assert not t.blocked("192.0.2.1")
    assert t.failed("192.0.2.1") == 4
    assert t.blocked("192.0.2.1")
    assert not t.blocked("192.0.2.2")  # another address is not affected
    clock.t += 61
    assert not t.blocked("192.0.2.1")


async def test_a_throttled_address_is_refused_without_asking_the_store():
    from mailflow_imap_pop3.auth import Authenticator, Throttled

    class Store:
        asked = 0

        async def authenticate(self, user, password, service):
            Store.asked += 1
            return None

    throttle = LoginThrottle(max_failures=1, window=60, free=1)
    auth = Authenticator(Store(), throttle, AuthCache(ttl=10))
    with pytest.raises(Exception, match="a@x.test"):
        await auth.login("a@x.test", "wrong", "192.0.2.1", "imap")
    with pytest.raises(Throttled, match="192.0.2.1"):
        await auth.login("a@x.test", "pw", "192.0.2.1", "imap")
    assert Store.asked == 1


def test_ipv6_addresses_share_their_64():
    t = LoginThrottle(max_failures=2, window=60)
    t.failed("2001:db8::1")
    t.failed("2001:db8::ffff")
    assert t.blocked("2001:db8::5") and not t.blocked("2001:db8:0:1::1")
    t.failed("::ffff:192.0.2.1")
    assert t.failures("192.0.2.1") == 1


def test_auth_cache_expires_and_never_keys_on_the_password():
    clock = Clock()
    c = AuthCache(ttl=10, clock=clock)
    p = Principal(1, "a@x.test", token="t")
    c.put("A@x.test", "pw", p)
    assert c.get("a@x.test", "pw") is p
    assert c.get("a@x.test", "other") is None
    assert all(b"pw" not in k for k, _ in c._entries.items())
    clock.t += 11
    assert c.get("a@x.test", "pw") is None


def test_auth_cache_forgets_a_revoked_user_and_refuses_its_stale_principals():
    """UserRevoked(user 1, generation 3): entries below 3 go, and a principal below 3 that a login
    brings back afterwards (the store answered just before the change) is not cached; 3 and newer are."""
    clock = Clock()
    c = AuthCache(ttl=10, clock=clock)
    old, other = Principal(1, "a@x.test", token="t1", generation=2), Principal(2, "b@x.test", token="t2")
    c.put("a@x.test", "old-pw", old)
    c.put("b@x.test", "pw", other)
    c.revoke(1, 3)
    c.revoke(1, 1)  # an older event, arriving late, takes nothing back
    assert c.get("a@x.test", "old-pw") is None and c.get("b@x.test", "pw") is other
    assert c.stale(old) and not c.stale(other)
    c.put("a@x.test", "old-pw", old)
    assert c.get("a@x.test", "old-pw") is None
    new = Principal(1, "a@x.test", token="t3", generation=3)
    c.put("a@x.test", "new-pw", new)
    assert c.get("a@x.test", "new-pw") is new and c.principals() == [other, new]
    c.revoke(1, None)  # deleted: every generation
    assert c.get("a@x.test", "new-pw") is None and c.stale(new)


def test_auth_cache_forget_drops_what_was_cached_before_it_and_the_cache_is_bounded():
    """The store refused a token of user 1: every entry of user 1 cached so far goes, a login after it
    is cached again; other users keep theirs. At most `size` entries, the least recently used first out."""
    clock = Clock()
    c = AuthCache(ttl=10, size=2, clock=clock)
    a1, a2, b = Principal(1, "a@x.test", token="t1"), Principal(1, "a@x.test", token="t2"), Principal(2, "b@x.test", token="t3")
    c.put("a@x.test", "pw", a1)
    c.put("alias@x.test", "pw", a1)
    c.forget(a1)
    assert c.get("a@x.test", "pw") is None and c.get("alias@x.test", "pw") is None and c.principals() == []
    c.put("a@x.test", "pw", a2)
    assert c.get("a@x.test", "pw") is a2
    c.put("b@x.test", "pw", b)
    assert c.get("a@x.test", "pw") is a2  # a is now the most recently used: b goes first
    c.put("c@x.test", "pw", Principal(3, "c@x.test", token="t4"))
    assert c.get("b@x.test", "pw") is None and c.get("a@x.test", "pw") is a2
    clock.t += 11  # what was cached has expired; a login now is cached as ever
    c.put("a@x.test", "pw", a2)
    assert c.get("a@x.test", "pw") is a2


@settings(max_examples=400)
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "forget", "revoke", "delete", "tick"]), st.integers(0, 2), st.integers(0, 3))))
def test_auth_cache_never_answers_what_was_dropped(ops):
    """Against a model that drops entries at once: whatever the cache answers, the model still holds
    (a forget, revoke or expiry is never undone)."""
    clock = Clock()
    c = AuthCache(ttl=10, size=1000, clock=clock)
    model: dict[tuple[int, str], tuple[Principal, float]] = {}
    revoked: dict[int, tuple[int | None, float]] = {}
    for op, user, n in ops:
        name, password = f"u{user}@x.test", f"pw{n % 2}"
        if op == "put":
            p = Principal(user, name, token=f"t{n}", generation=n)
            needed, until = revoked.get(user, (-1, 0.0))
            if until <= clock.t or (needed is not None and p.generation >= needed):
                model[(user, password)] = (p, clock.t + 10)
            c.put(name, password, p)
        elif op == "get":
            got = c.get(name, password)
            if got is not None:
                assert (user, password) in model and model[(user, password)][0] is got
                assert model[(user, password)][1] > clock.t
        elif op == "forget":
            model = {k: v for k, v in model.items() if k[0] != user}
            c.forget(Principal(user, name))
        elif op in ("revoke", "delete"):
            needed = None if op == "delete" else n
            model = {k: v for k, v in model.items() if k[0] != user or (needed is not None and v[0].generation >= needed)}
            revoked[user] = (needed, clock.t + 60)
            c.revoke(user, needed)
        else:
            clock.t += n * 5
        live = {id(p) for p, until in model.values() if until > clock.t}
        assert all(id(p) in live for p in c.principals())


async def test_login_asks_again_when_the_answer_was_revoked_meanwhile():
    from mailflow_imap_pop3.auth import Authenticator, LoginFailed

    cache = AuthCache(ttl=10)

    class Store:  # answers with the old generation once, as if the change committed meanwhile
        answers = [Principal(1, "a@x.test", token="old", generation=1), Principal(1, "a@x.test", token="new", generation=2)]

        async def authenticate(self, user, password, service):
            cache.revoke(1, 2)  # the UserRevoked event arrives while the store answers
            return self.answers.pop(0)

    auth = Authenticator(Store(), LoginThrottle(max_failures=20, window=900), cache)
    assert (await auth.login("a@x.test", "pw", "192.0.2.1", "imap")).token == "new"
    Store.answers = [Principal(1, "a@x.test", token="old", generation=1)] * 2
    cache.revoke(1, 2)
    with pytest.raises(LoginFailed):
        await auth.login("b@x.test", "pw", "192.0.2.1", "imap")


def test_byte_stuffing_and_line_ends():
    assert dot_stuffed(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_stuffed(b"x\ny\n") == b"x\r\ny\r\n.\r\n"
    assert (
        crlf(b"a\nb\r\n") == b"a\r\nb\r\n" and crlf(b"a\r\nb\n") == b"a\r\nb\n"
    )  # judged by the first line end


def test_top():
    raw = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top(raw, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top(raw, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top(raw, 99) == raw
    assert top(b"only header\r\n", 3) == b"only header\r\n"


# --- sequence sets, normalised when parsed (issue 12.5) ------------------------------------------------


@pytest.mark.parametrize(
    ("written", "ranges"),
    [
        ([(1, 0)] * 16_000, ((1, 0),)),
        ([(3, 1), (2, 5), (7, 7), (6, 6), (9, 10)], ((1, 7), (9, 10))),  # overlapping and adjacent
        ([(5, 0), (0, 2), (9, 0), (0, 0)], ((2, 0), (9, 0))),  # 2:* and 9:* name all that these do
        ([(0, 0), (0, 0)], ((0, 0),)),
        ([(4, 4), (0, 0)], ((4, 4), (0, 0))),
    ],
)
def test_seqsets_are_normalised(written, ranges):
    assert SeqSet.of(written).ranges == ranges


def numbers(written, largest: int) -> set[int]:
    out = set()
    for a, b in written:
        a, b = a or largest, b or largest
        out.update(range(min(a, b), max(a, b) + 1))
    return out


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=12),
    st.integers(1, 40),
)
def test_property_a_normalised_set_names_what_was_written(written, largest):
    resolved = SeqSet.of(written).resolve(largest)
    assert resolved == sorted(resolved)
    assert all(lo <= hi and (i == 0 or lo > resolved[i - 1][1] + 1) for i, (lo, hi) in enumerate(resolved))
    assert {n for lo, hi in resolved for n in range(lo, hi + 1)} == numbers(written, largest)
