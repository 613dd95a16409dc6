"""The failed-AUTH throttle (pure, with a fake clock); connection counting is tests/unit/test_connections.py."""

from __future__ import annotations

from mailflow_smtp_ingress.limits import AuthThrottle


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
