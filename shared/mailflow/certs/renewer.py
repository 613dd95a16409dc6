"""The renewer's loop: look at the installed certificate, order a new one when it is due, sleep, again.

A check orders when the certificate is missing, self-signed, lacks a name, does not match its key or is
inside its renew window (`files.why_order`); otherwise it sleeps until the window opens or the next
check (check_interval_seconds), whichever is sooner. A failed order is logged at ERROR with the reason
and retried after retry_seconds, doubling up to check_interval_seconds; the installed pair is never
touched by a failure. Two renewers on one folder take turns: a check holds an exclusive lock
(`.acme.lock` beside the key) and one that finds it held skips its turn; the other's new certificate is
then current for it too. The challenge listener (only the configured challenge's) is bound before the
first check and held for the life of the process, so a port problem stops the process at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mailflow.certs import files, order
from mailflow.certs.challenges import Responders
from mailflow.certs.settings import Settings

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    CURRENT = "current"  # nothing to do
    INSTALLED = "installed"  # a new certificate is in place
    BUSY = "busy"  # another renewer holds the lock


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Renewer:
    def __init__(self, settings: Settings, now: Callable[[], dt.datetime] = utcnow):
        if not settings.enabled:
            raise ValueError("MAILFLOW_ACME_DIRECTORY is empty: there is no ACME server to ask")
        if not settings.tls_cert or not settings.tls_key:
            raise ValueError("MAILFLOW_TLS_CERT and MAILFLOW_TLS_KEY must name where the certificate goes")
        if not settings.names():
            raise ValueError("no hostname to certify: set MAILFLOW_ACME_HOSTNAMES or MAILFLOW_HOSTNAME")
        self.settings = settings
        self.now = now
        self.cert = Path(settings.tls_cert)
        self.key = Path(settings.tls_key)
        self.account = Path(settings.account_key) if settings.account_key else self.key.parent / "acme-account.key"
        self.responders = Responders()

    async def start(self) -> None:
        """Bind the configured challenge's listener (OSError when it cannot)."""
        http = self.settings.challenge == "http-01"
        await self.responders.start(
            self.settings.http_listen if http else None, None if http else self.settings.tls_listen
        )

    async def stop(self) -> None:
        await self.responders.stop()

    @contextlib.contextmanager
    def _turn(self) -> Iterator[bool]:
        self.key.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key.parent / ".acme.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def check(self) -> Outcome:
        """One check, blocking (run it in a thread): order and install when due. OrderFailed on failure."""
        names = self.settings.names()
        with self._turn() as mine:
            if not mine:
                log.info("another renewer is at work on %s: skipping this check", self.key.parent)
                return Outcome.BUSY
            reason = files.why_order(self.cert, self.key, names, self.settings.renew_before_days, self.now())
            if reason is None:
                return Outcome.CURRENT
            log.info("ordering a certificate for %s: %s", ", ".join(names), reason)
            chain, key_pem = order.obtain(self.settings, self.account, self.responders)
            files.write_pair(self.cert, self.key, chain, key_pem)
        have = files.installed(self.cert)
        if have is not None:
            log.info(
                "installed a certificate for %s: serial %x, valid until %s UTC",
                ", ".join(sorted(have.names)), have.leaf.serial_number, f"{have.not_after:%Y-%m-%d %H:%M}",
            )
        return Outcome.INSTALLED

    def next_check(self) -> float:
        """Seconds until the next check: the renew window's opening or the check interval, sooner first.
        A certificate inside its window already (a window longer than the lifetime) waits the interval."""
        interval = self.settings.check_interval_seconds
        have = files.installed(self.cert)
        if have is None:
            return interval
        until = (have.renew_at(self.settings.renew_before_days) - self.now()).total_seconds()
        return interval if until <= 0 else max(1.0, min(interval, until))

    def retry_delay(self, failures: int) -> float:
        return min(self.settings.retry_seconds * 2 ** min(failures - 1, 30), self.settings.check_interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Check, sleep, check again until `stop` is set."""
        failures = 0
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.check)
                failures, delay = 0, self.next_check()
            except (order.OrderFailed, OSError) as e:  # OSError: the folder cannot be written
                failures += 1
                delay = self.retry_delay(failures)
                log.error(
                    "certificate order failed (%d in a row), next try in %.0f s; the installed certificate is kept: %s",
                    failures, delay, e,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
