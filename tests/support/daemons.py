"""Daemons started by their own command and stopped by the PID they write: waiting and stopping.

Postfix's and Dovecot's master processes detach from the caller, so they are not our children: they
are watched through their PID files and /proc, stopped with SIGTERM (each master ends its own
children) and SIGKILLed if still there after the timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns once the process has ended."""
    if not pid or not alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)
    raise RuntimeError(f"pid {pid} survived SIGKILL")


def greets(host: str, port: int, prefix: bytes) -> bool:
    """Whether a server on host:port accepts a connection and greets with `prefix`."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(512).startswith(prefix)
    except OSError:
        return False


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)
