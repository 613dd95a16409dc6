"""Training rspamd from what users do: a message copied or moved into the \\Junk mailbox is learned as
spam; one copied or moved out of \\Junk, into anything but \\Trash, as ham (deleting is no verdict).

`Store.copy` asks `messages.training` after the copy committed and hands the bodies to `Learner.moved`,
which only queues them: the IMAP reply never waits for rspamd. One background task reads each body
from the blob store and posts it to rspamd's controller (/learnspam, /learnham; mailflow.rspamd).
Bounds: at most `queue_size` bodies wait (more are dropped), a body over `max_bytes` is not sent.
Failure (rspamd down, slow, refusing the password, a body gone): logged and counted in
mailflow_mailbox_store_rspamd_learn_total{kind,result}; the message is not learned and not tried
again. Training is advice about mail, never mail: nothing the user did is undone or delayed by it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mailflow.rspamd import RspamdClient, RspamdUnavailable
from mailflow_mailbox_store import metrics

log = logging.getLogger(__name__)


class Learner:
    def __init__(
        self,
        client: RspamdClient,
        read: Callable[[list[str]], Awaitable[list[bytes]]],
        queue_size: int = 1000,
        max_bytes: int = 2 * 1024 * 1024,
    ):
        self.client, self.read, self.max_bytes = client, read, max_bytes
        self.queue: asyncio.Queue[tuple[bool, str]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task | None = None

    def moved(self, spam: bool, bodies: list[tuple[str, int]]) -> None:
        """Queue (locator, size) bodies to be learned as spam (True) or ham; returns at once."""
        kind = "spam" if spam else "ham"
        for locator, size in bodies:
            if size > self.max_bytes:
                metrics.RSPAMD_LEARN.labels(kind, "too_big").inc()
                continue
            try:
                self.queue.put_nowait((spam, locator))
            except asyncio.QueueFull:
                metrics.RSPAMD_LEARN.labels(kind, "dropped").inc()
        if self._task is None and not self.queue.empty():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            spam, locator = await self.queue.get()
            kind = "spam" if spam else "ham"
            try:
                (body,) = await self.read([locator])
                learned = await self.client.learn(spam, body)
            except RspamdUnavailable as exc:
                metrics.RSPAMD_LEARN.labels(kind, "failed").inc()
                log.warning("rspamd did not learn a message as %s: %s", kind, exc)
            except Exception:
                metrics.RSPAMD_LEARN.labels(kind, "failed").inc()
                log.exception("learning a message as %s failed", kind)
            else:
                metrics.RSPAMD_LEARN.labels(kind, "learned" if learned else "ignored").inc()
            finally:
                self.queue.task_done()

    async def idle(self) -> None:
        """Until every queued body has been tried (tests, shutdown)."""
        await self.queue.join()

    async def close(self, timeout: float = 5.0) -> None:
        """Let what is queued go for up to `timeout` seconds, then stop."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout)
        except TimeoutError:
            log.warning("stopping with %d messages not learned", self.queue.qsize())
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.close()
