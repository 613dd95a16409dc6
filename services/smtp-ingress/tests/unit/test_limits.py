"""smtp-ingress's failed-AUTH throttle: the shared mailflow.throttle as handler.py configures it from the
settings (with a fake clock); connection counting is tests/unit/test_connections.py."""

from __future__ import annotations

from mailflow_smtp_ingress.handler import IngressHandler


def throttle(settings_factory, clock, **overrides):
    settings = settings_factory(**overrides)
    handler = IngressHandler(settings, directory=None, queue=None)
    handler.throttle.clock = clock
    return handler.throttle


def test_auth_throttle_window(settings_factory):
    now = [0.0]
    t = throttle(settings_factory, lambda: now[0], auth_failures_per_ip=2, auth_failure_window=60)
    assert not t.blocked("192.0.2.1")
    t.failed("192.0.2.1")
    now[0] = 10
    t.failed("192.0.2.1")
    assert t.blocked("192.0.2.1") and not t.blocked("192.0.2.2")
    now[0] = 61  # the first failure left the window
    assert not t.blocked("192.0.2.1")
    now[0] = 71
    assert "192.0.2.1" not in t._failures or not t.blocked("192.0.2.1")


def test_every_failure_waits_the_same_delay(settings_factory):
    t = throttle(settings_factory, lambda: 0.0, auth_failure_delay=1.0)
    assert [t.failed("192.0.2.1") for _ in range(5)] == [1.0] * 5


def test_auth_throttle_memory_is_bounded(settings_factory):
    t = throttle(settings_factory, lambda: 0.0, auth_failures_per_ip=1, auth_failure_window=60)
    t.max_entries = 10
    for i in range(100):
        t.failed(f"10.0.0.{i}")
    assert len(t._failures) == 10
