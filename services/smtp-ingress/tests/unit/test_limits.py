"""Connection counting and the failed-AUTH throttle (pure, with a fake clock)."""

from __future__ import annotations

from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.limits import AuthThrottle, ConnectionLimiter


def test_connection_limiter_per_ip_and_total():
    lim = ConnectionLimiter(max_total=3, max_per_ip=2)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    assert lim.acquire("a") is R.R421_TOO_MANY_CONNECTIONS
    assert lim.acquire("b") is None
    assert lim.acquire("c") is R.R421_SERVER_BUSY
    lim.release("a")
    assert lim.acquire("c") is None
    for ip in ("a", "b", "c"):
        lim.release(ip)
    assert lim.per_ip == {} and lim.total == 0


def test_auth_throttle_window():
    now = [0.0]
    t = AuthThrottle(max_failures=2, window=60, clock=lambda: now[0])
    assert not t.blocked("x")
    t.failed("x")
    now[0] = 10
    t.failed("x")
    assert t.blocked("x") and not t.blocked("y")
    now[0] = 61  # the first failure left the window
    assert not t.blocked("x")
    now[0] = 71
    assert "x" not in t._failures or not t.blocked("x")


def test_auth_throttle_memory_is_bounded():
    t = AuthThrottle(max_failures=1, window=60, size=10, clock=lambda: 0.0)
    for i in range(100):
        t.failed(f"10.0.0.{i}")
    assert len(t._failures) == 10
