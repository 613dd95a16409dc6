"""Canonical names, flags, UID sets, the wire frame, session tokens and the login cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.errors import Invalid
from mailflow.store import wire
from mailflow.store.client import session_origin
from mailflow_mailbox_store import names
from mailflow_mailbox_store.passwords import Passwords
from mailflow_mailbox_store.sessions import Sessions, derive_key
from mailflow_mailbox_store.uidset import UidSet


@pytest.mark.parametrize(
    ("given", "canon"),
    [
        ("Alice@Example.TEST", "alice@example.test"),
        ("<bob@example.test>", "bob@example.test"),
        ("x@bücher.test", "x@xn--bcher-kva.test"),
        ("a+tag@example.test.", "a+tag@example.test"),
    ],
)
def test_addresses(given, canon):
    assert names.address(given) == canon


@pytest.mark.parametrize(
    "bad", ["", "noat", "@example.test", "a b@example.test", "a@bad_domain!", "a@-x.test"]
)
def test_bad_addresses(bad):
    with pytest.raises(Invalid):
        names.address(bad)


def test_mailbox_names():
    assert names.mailbox("inbox") == "INBOX"
    assert names.mailbox("Inbox/Sub") == "INBOX/Sub"
    assert names.mailbox("INBOXES") == "INBOXES"
    assert names.mailbox("Ünïcode/ok") == "Ünïcode/ok"
    for bad in ("", "/a", "a/", "a//b", "a%", "a*", "x\x00", "/".join("a" * 40)):
        with pytest.raises(Invalid):
            names.mailbox(bad)
    assert names.parents("a/b/c") == ["a", "a/b"]


def test_flags():
    assert names.split_flags(["\\seen", "\\Recent", "$Label1"]) == (1, ["$Label1"])
    with pytest.raises(Invalid):
        names.split_flags(["\\Unknown"])
    with pytest.raises(Invalid):
        names.split_flags(["bad(keyword"])


@given(st.lists(st.integers(1, 500), max_size=200))
def test_uid_ranges_round_trip(uids):
    ranges = wire.uid_ranges(uids)
    assert [u for lo, hi in ranges for u in range(lo, hi + 1)] == sorted(set(uids))
    s = UidSet(ranges)
    assert all(u in s for u in uids)
    assert not any(u in s for u in range(1, 501) if u not in set(uids))


def test_uidset_sql_is_exact_for_few_ranges_and_a_superset_for_many():
    few = UidSet([(1, 3), (7, 7)])
    clause, params = few.sql()
    assert few.exact_in_sql and "BETWEEN" in clause and params["ul1"] == 7
    many = UidSet([(i, i) for i in range(1, 200, 2)])
    clause, params = many.sql()
    assert not many.exact_in_sql and params == {"ulo": 1, "uhi": 199}
    assert many.filter([(1,), (2,), (3,)]) == [(1,), (3,)]
    for bad in ([(0, 1)], [(5, 4)], [("x", 1)]):
        with pytest.raises(Invalid):
            UidSet(bad)


def test_frames():
    data = wire.encode({"a": 1}, [b"one", b"", b"three"])
    assert wire.decode(data) == ({"a": 1}, [b"one", b"", b"three"])
    with pytest.raises(ValueError):
        wire.decode(data[:-1])
    with pytest.raises(ValueError):
        wire.decode(data + b"x")
    assert b"".join(wire.stream({"a": 1}, [3, 0, 5], iter([b"one", b"", b"three"]))) == data


def test_session_tokens():
    sessions = Sessions(derive_key("session-key"), ttl=60)
    token, s = sessions.issue(42, 3)
    assert sessions.check(token) == s and s.user_id == 42 and s.generation == 3
    assert session_origin(token) == s.sid
    assert Sessions(derive_key("another"), ttl=60).check(token) is None
    payload, _, mac = token.partition(".")
    other, _ = sessions.issue(7, 1)
    assert sessions.check(other.partition(".")[0] + "." + mac) is None
    assert sessions.check("garbage") is None and sessions.check("") is None
    expired, _ = Sessions(derive_key("session-key"), ttl=-5).issue(1, 1)
    assert sessions.check(expired) is None


def test_login_cache_is_bound_to_the_stored_hash():
    pw = Passwords(time_cost=1, memory_kib=1024, parallelism=1, cache_ttl=60)
    h = pw.hash("secret")
    assert h.startswith("$argon2id$")
    assert not pw.cached("a@x.test", h, "secret")
    assert pw.verify("a@x.test", h, "secret") == (True, None)
    assert pw.cached("a@x.test", h, "secret")
    assert not pw.cached("a@x.test", h, "wrong")
    assert not pw.cached("a@x.test", pw.hash("secret"), "secret")  # a new hash (password changed)
    assert pw.verify("a@x.test", h, "wrong") == (False, None)
    assert pw.verify("nobody@x.test", None, "secret") == (False, None)
    pw.forget("a@x.test")
    assert not pw.cached("a@x.test", h, "secret")
    weak = Passwords(time_cost=1, memory_kib=1024, parallelism=1).hash("pw")
    ok, new_hash = Passwords(time_cost=2, memory_kib=2048, parallelism=1).verify("u", weak, "pw")
    assert ok and new_hash and new_hash != weak  # upgraded to the current parameters


def test_login_cache_expires_and_is_bounded():
    now = [0.0]
    pw = Passwords(time_cost=1, memory_kib=1024, parallelism=1, cache_ttl=60, cache_size=2, clock=lambda: now[0])
    for login in ("a@x.test", "b@x.test"):
        pw.remember(login, "$hash", "secret")
    assert pw.cached("a@x.test", "$hash", "secret")  # a is now the most recently used: b goes next
    pw.remember("c@x.test", "$hash", "secret")
    assert not pw.cached("b@x.test", "$hash", "secret") and pw.cached("a@x.test", "$hash", "secret")
    now[0] = 60
    assert not pw.cached("a@x.test", "$hash", "secret") and not pw.cached("c@x.test", "$hash", "secret")
    off = Passwords(time_cost=1, memory_kib=1024, parallelism=1, cache_ttl=0)
    off.remember("a@x.test", "$hash", "secret")
    assert not off.cached("a@x.test", "$hash", "secret")


def test_scram_parameters_and_verifiers():
    from mailflow.scram import Verifier

    pw = Passwords(time_cost=1, memory_kib=1024, parallelism=1, scram_secret=b"deployment")
    other_process = Passwords(time_cost=1, memory_kib=1024, parallelism=1, scram_secret=b"deployment")
    stored = pw.verifier("pencil")
    v = Verifier.decode(stored)
    assert pw.scram_parameters("a@x.test", stored) == (v.salt, 4096)
    fake = pw.scram_parameters("nobody@x.test", None)
    assert fake == other_process.scram_parameters("nobody@x.test", None)  # every store process agrees
    assert fake == pw.scram_parameters("nobody@x.test", "garbage") and fake[1] == 4096
    assert pw.verifier_current(stored) and not pw.verifier_current(None) and not pw.verifier_current("garbage")
    assert not Passwords(time_cost=1, memory_kib=1024, parallelism=1, scram_iterations=8192).verifier_current(stored)
    with pytest.raises(ValueError, match="at least 4096"):
        Passwords(scram_iterations=1000)
    password_hash, verifier = pw.hash_both("pencil")
    assert pw.verify("a@x.test", password_hash, "pencil")[0] and Verifier.decode(verifier).iterations == 4096
