"""mailflow.connections: open connections per client and in total (SMTP, IMAP and POP3 listeners), the
total cap under the file-descriptor limit, eviction at the cap, the input deadline, and accept()
meeting EMFILE."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import textwrap

from mailflow.connections import ConnectionLimiter, InputDeadline, Slot, client_key, connection_cap

FDS = 100_000  # far above every cap below: the tests do not depend on this process's limit


def test_connection_limiter_per_ip_and_total():
    lim = ConnectionLimiter(max_total=3, max_per_ip=2, fd_limit=FDS)
    a1, a2, a3, b, c = Slot("a"), Slot("a"), Slot("a"), Slot("b"), Slot("c")
    assert lim.acquire(a1) is None and lim.acquire(a2) is None
    assert lim.acquire(a3) == "per_ip"
    assert lim.acquire(b) is None
    assert lim.acquire(c) == "total"  # nobody may be evicted
    lim.release(a1)
    lim.release(a1)  # again: nothing happens
    lim.release(a3)  # never counted: nothing happens
    assert lim.per_ip == {"a": 1, "b": 1} and lim.total == 2
    assert lim.acquire(c) is None
    for slot in (a2, b, c):
        lim.release(slot)
    assert lim.per_ip == {} and lim.total == 0


def test_at_the_total_cap_the_oldest_evictable_connection_makes_room():
    lim = ConnectionLimiter(max_total=3, max_per_ip=0, fd_limit=FDS)
    ended: list[str] = []
    slots = {name: Slot(name) for name in ("authed", "busy", "idle", "new", "newer")}

    def evictable(name: str, yes: bool):
        def evict() -> bool:
            if yes:
                ended.append(name)
            return yes

        return evict

    for name in ("authed", "busy", "idle"):
        assert lim.acquire(slots[name]) is None
    slots["busy"].evict = evictable("busy", False)  # e.g. waiting for the store: it says no
    slots["idle"].evict = evictable("idle", True)
    assert lim.acquire(slots["new"]) is None
    assert ended == ["idle"] and list(lim.held) == [slots["authed"], slots["busy"], slots["new"]]
    assert lim.per_ip == {"authed": 1, "busy": 1, "new": 1} and lim.evicted == 1
    lim.release(slots["idle"])  # its session ends later: it was released already
    assert lim.total == 3
    assert lim.acquire(slots["newer"]) == "total"


def test_a_per_client_refusal_never_evicts_anyone():
    lim = ConnectionLimiter(max_total=1, max_per_ip=1, fd_limit=FDS)
    held = Slot("192.0.2.1")
    assert lim.acquire(held) is None
    held.evict = lambda: True
    assert lim.acquire(Slot("192.0.2.1")) == "per_ip" and lim.evicted == 0


def test_the_total_cap_stays_below_the_descriptor_limit():
    assert connection_cap(2000, fd_limit=1024, reserve=128) == 896
    assert connection_cap(500, fd_limit=1024, reserve=128) == 500
    assert connection_cap(0, fd_limit=1024, reserve=128) == 896  # "no cap" is the descriptors' cap
    assert connection_cap(2000, fd_limit=200, reserve=128) == 100  # a tiny limit: half of it
    assert ConnectionLimiter(0, 0, fd_limit=512).max_total == 512 - 128


def test_the_limiter_raises_the_soft_descriptor_limit_to_the_hard_one():
    code = textwrap.dedent("""
        import resource
        from mailflow.connections import ConnectionLimiter, FD_RESERVE
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        lim = ConnectionLimiter(10**9, 0)
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(now == hard, lim.max_total == now - FD_RESERVE)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_zero_turns_the_per_client_cap_off():
    lim = ConnectionLimiter(max_total=0, max_per_ip=0, fd_limit=FDS)
    assert all(lim.acquire(Slot("192.0.2.1")) is None for _ in range(1000))


def test_an_ipv6_client_counts_by_its_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    lim = ConnectionLimiter(max_total=0, max_per_ip=2, fd_limit=FDS)
    assert lim.acquire(Slot("2001:db8::1")) is None and lim.acquire(Slot("2001:db8::2")) is None
    assert lim.acquire(Slot("2001:db8::3")) == "per_ip"
    assert lim.acquire(Slot("2001:db8:0:1::3")) is None


# --- the input deadline ---------------------------------------------------------------------------------


async def _expiry(deadline_args: dict, feed) -> float:
    """Seconds until the deadline fires while `feed(deadline)` plays the client."""
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    started = loop.time()
    d = InputDeadline(expired=lambda: fired.set_result(loop.time() - started), **deadline_args)
    client = asyncio.ensure_future(feed(d))
    try:
        return await asyncio.wait_for(fired, 10)
    finally:
        client.cancel()
        d.cancel()


async def test_dribbled_bytes_do_not_extend_the_deadline():
    async def dribble(d):
        while True:
            await asyncio.sleep(0.05)
            d.received(1)

    took = await _expiry(dict(timeout=0.4, min_rate=500), dribble)
    assert 0.4 <= took < 2.0  # dribbling on, it would never end


async def test_a_piece_arriving_at_the_minimum_rate_gets_the_time_its_size_asks_for():
    async def steady(d):  # 100 octets every 0.1 s = 1000/s, twice the minimum rate
        while True:
            await asyncio.sleep(0.1)
            d.received(100)

    took = await _expiry(dict(timeout=0.2, min_rate=500, lifetime=1.0), steady)
    assert 1.0 <= took < 2.5  # only the lifetime ended it


async def test_each_reply_starts_a_new_piece_and_busy_holds_the_deadline():
    busy = [False]

    async def client(d):
        for _ in range(5):  # five quick commands, each within the timeout
            await asyncio.sleep(0.2)
            d.begin()
        busy[0] = True  # a long command: no input is awaited
        await asyncio.sleep(0.6)
        busy[0] = False
        d.begin()

    took = await _expiry(dict(timeout=0.3, min_rate=500, busy=lambda: busy[0]), client)
    assert 1.9 <= took < 3.5  # 1.0 of commands, 0.6 busy, then 0.3 (the busy re-check waits up to 1 s)


async def test_authenticated_lifts_the_lifetime():
    async def client(d):
        d.authenticated(0.5)
        while True:
            await asyncio.sleep(0.1)
            d.begin()

    fired = []
    d = InputDeadline(0.5, 500, lambda: fired.append(1), lifetime=0.3)
    task = asyncio.ensure_future(client(d))
    await asyncio.sleep(1.0)
    task.cancel()
    d.cancel()
    assert fired == []


# --- accept() meeting EMFILE ----------------------------------------------------------------------------


def test_accept_at_emfile_sheds_the_waiting_connection_and_goes_on():
    """The process has no descriptor left: accept() fails with EMFILE. The loop closes the waiting
    connection with its spare descriptor (the client sees the end at once, not a stall), keeps the loop
    free, and serves the next client once a descriptor is free again."""
    code = textwrap.dedent("""
        import asyncio, os, resource, socket
        from mailflow.connections import accept

        async def main():
            srv = socket.create_server(("127.0.0.1", 0))
            srv.setblocking(False)
            taken = []
            task = asyncio.ensure_future(accept(srv, lambda c, a: taken.append(c)))
            await asyncio.sleep(0.05)
            port = srv.getsockname()[1]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            filler = []
            client = socket.create_connection(("127.0.0.1", port))
            while True:  # use up every descriptor
                try:
                    filler.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    break
            ticks = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.5
            while loop.time() < end:
                await asyncio.sleep(0.01)
                ticks += 1
            client.settimeout(2)
            shed = client.recv(1) == b""
            for fd in filler:
                os.close(fd)
            other = socket.create_connection(("127.0.0.1", port))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if taken:
                    break
            print(shed, ticks > 20, len(taken))
            task.cancel()

        asyncio.run(main())
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])),
    ).stdout  # fmt: skip
    assert out.split() == ["True", "True", "1"]
