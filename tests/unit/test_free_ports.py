"""Ports for test stacks come from below the kernel's ephemeral range: a port from that range (what
binding port 0 gives) can become the local end of an outgoing connection before the server binds it,
and the service then fails with "address already in use" (seen in CI)."""

from __future__ import annotations

import socket

from mailflow.stack import Ports, _ephemeral_range, free_port


def test_free_ports_avoid_the_ephemeral_range_and_repeat_never():
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(not (low <= p <= high) for p in ports)
    p = Ports.free(host="127.0.0.2")
    every = [p.smtp, p.submission, p.smtps, p.imap, p.imaps, p.pop3, p.pop3s, p.managesieve, p.nats, *p.http.values()]
    assert len(set(every)) == len(every) and all(not (low <= x <= high) for x in every)


def test_every_port_handed_out_can_be_bound():
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", free_port()))
            s.listen()
