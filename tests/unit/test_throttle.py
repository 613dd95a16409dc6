"""mailflow.throttle: failed logins per client (smtp-ingress AUTH, imap-pop3 LOGIN/AUTHENTICATE/PASS),
with a fake clock. Each service's own configuration is tested in its unit tests too."""

from __future__ import annotations

from mailflow.connections import client_key
from mailflow.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_window_blocks_and_forgets():
    clock = Clock()
    t = LoginThrottle(max_failures=2, window=60, clock=clock)
    assert not t.blocked("192.0.2.1")
    t.failed("192.0.2.1")
    clock.t += 10
    t.failed("192.0.2.1")
    assert t.blocked("192.0.2.1") and not t.blocked("192.0.2.2")
    clock.t += 50  # the first failure is exactly `window` old: it has left
    assert not t.blocked("192.0.2.1") and t.failures("192.0.2.1") == 1
    clock.t += 10
    assert t.failures("192.0.2.1") == 0 and "192.0.2.1" not in t._failures


def test_tarpit_free_then_doubling_then_capped():
    t = LoginThrottle(max_failures=0, window=60, free=2, delay=0.5, max_delay=3, clock=Clock())
    assert [t.failed("192.0.2.1") for _ in range(7)] == [0, 0, 0.5, 1, 2, 3, 3]
    assert not t.blocked("192.0.2.1")  # max_failures 0: never blocked


def test_flat_delay():
    t = LoginThrottle(max_failures=10, window=600, delay=1.0, max_delay=1.0, clock=Clock())
    assert [t.failed("192.0.2.1") for _ in range(4)] == [1.0] * 4


def test_a_client_is_an_ipv4_address_or_an_ipv6_64():
    t = LoginThrottle(max_failures=2, window=60, clock=Clock())
    t.failed("2001:db8:1:2::1")
    t.failed("2001:db8:1:2:ffff::9")
    assert t.blocked("2001:db8:1:2::77") and not t.blocked("2001:db8:1:3::1")
    t.failed("::ffff:192.0.2.7")
    t.failed("192.0.2.7")
    assert t.blocked("192.0.2.7")


def test_memory_is_bounded_oldest_first():
    clock = Clock()
    t = LoginThrottle(max_failures=1, window=60, max_entries=10, clock=clock)
    for i in range(100):
        t.failed(f"10.0.0.{i}")
    assert len(t._failures) == 10 and t.blocked("10.0.0.99") and not t.blocked("10.0.0.0")


def test_thousands_of_failures_never_raise_and_keep_little():
    """The fuzzer's find: past ~1,024 failures in the window 2^(n-1) overflowed a float, and smtp-ingress
    answered AUTH with an internal error; and each failure was kept, however many."""
    t = LoginThrottle(max_failures=0, window=600, free=3, delay=1.0, max_delay=15, clock=Clock())
    assert {t.failed("192.0.2.1") for _ in range(5000)} == {0, 1, 2, 4, 8, 15}
    assert len(t._failures[client_key("192.0.2.1")]) <= 3 + 64
    blocking = LoginThrottle(max_failures=5000, window=600, clock=Clock())
    for _ in range(5000):
        blocking.failed("192.0.2.1")
    assert blocking.blocked("192.0.2.1")
