"""Which processes of the running stacks have died: for the report of a failing test (see conftest.py);
and `example_test`, the whole stack most end-to-end tests start.

`track()` wraps Stack.start and Stack.stop once, so every Stack between the two is known here without
the runtime class keeping a registry for tests; `post_mortem()` lists each exited process of those
stacks with its exit code and the tail of its log (a refused connection then says why).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from pathlib import Path

from mailflow.stack import Ports, Stack

_running: weakref.WeakSet[Stack] = weakref.WeakSet()


def track() -> None:
    if getattr(Stack.start, "tracked", False):
        return
    start, stop = Stack.start, Stack.stop

    @functools.wraps(start)
    def tracked_start(self: Stack, *args, **kw) -> Stack:
        _running.add(self)
        return start(self, *args, **kw)

    @functools.wraps(stop)
    def tracked_stop(self: Stack) -> None:
        try:
            stop(self)
        finally:
            _running.discard(self)

    tracked_start.tracked = True  # type: ignore[attr-defined]
    Stack.start, Stack.stop = tracked_start, tracked_stop  # type: ignore[method-assign]


def post_mortem(chars: int = 2000) -> str:
    """Every process of a running stack that has exited, its code and log tail."""
    out = []
    for st in list(_running):
        for proc in st.dead():
            out.append(f"{st.data_dir}: {proc.name} exited with {proc.popen.returncode}\n{st.log_tail(proc, chars)}")
        if st.nats is not None and st.nats.proc is not None and st.nats.proc.poll() is not None:
            out.append(f"{st.data_dir}: nats-server exited with {st.nats.proc.returncode}")
    return "\n".join(out)


@contextlib.contextmanager
def example_test(data_dir: Path, env: dict[str, str] | None = None, users: tuple[str, ...] = ("alice", "bob")) -> Iterator[Stack]:
    """The seven services and nats-server as processes on free ports, with the domain example.test and
    the users <name>@example.test (password "<name>-pw"); stopped on leaving."""
    st = Stack(data_dir, Ports.free(), env=env).start()
    try:
        st.cli("domain", "add", "example.test")
        for user in users:
            st.cli("user", "add", f"{user}@example.test", "--password", f"{user}-pw")
        yield st
    finally:
        st.stop()
