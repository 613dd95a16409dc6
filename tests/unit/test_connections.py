"""mailflow.connections: open connections per client and in total (SMTP, IMAP and POP3 listeners)."""

from __future__ import annotations

from mailflow.connections import ConnectionLimiter, client_key


def test_connection_limiter_per_ip_and_total():
    lim = ConnectionLimiter(max_total=3, max_per_ip=2)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    assert lim.acquire("a") == "per_ip"
    assert lim.acquire("b") is None
    assert lim.acquire("c") == "total"
    lim.release("a")
    assert lim.acquire("c") is None
    for ip in ("a", "b", "c"):
        lim.release(ip)
    assert lim.per_ip == {} and lim.total == 0


def test_zero_turns_a_cap_off():
    lim = ConnectionLimiter(max_total=0, max_per_ip=0)
    assert all(lim.acquire("192.0.2.1") is None for _ in range(1000))


def test_an_ipv6_client_counts_by_its_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    lim = ConnectionLimiter(max_total=0, max_per_ip=2)
    assert lim.acquire("2001:db8::1") is None and lim.acquire("2001:db8::2") is None
    assert lim.acquire("2001:db8::3") == "per_ip"
    assert lim.acquire("2001:db8:0:1::3") is None
