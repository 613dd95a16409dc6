"""A `Worker` loop that stops at once when it is only waiting for messages.

`Worker.run` checks its stop event between fetches, so a stop waits for the fetch in progress to time
out (up to `fetch_timeout`). `QuickStop.run` races each fetch against the stop event: if the stop comes
first, the fetch is cancelled (nothing was handed to us yet; a message that arrives at that very moment
stays unacknowledged and JetStream redelivers it after `ack_wait`). A batch already being handled is
always finished and settled before `run` returns, exactly as in `Worker.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailflow.worker import Worker

log = logging.getLogger(__name__)


class QuickStop(Worker):
    # Off the latency path (e.g. results), wait this long after a short batch for more messages, so a
    # busy stream is handled in fewer, bigger batches (fewer transactions and round trips). 0: never.
    linger: float = 0.0

    async def _more(self, msgs: list) -> list:
        if not self.linger or len(msgs) >= self.batch:
            return msgs
        await asyncio.sleep(self.linger)
        try:
            return msgs + await self._sub.fetch(self.batch - len(msgs), wait=self.linger)
        except Exception:  # NATS trouble: handle what we have
            return msgs

    async def run(self, stop: asyncio.Event) -> None:
        await self.bind()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                fetch = asyncio.ensure_future(self._sub.fetch(self.batch, wait=self.fetch_timeout))
                await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(BaseException):
                        await fetch
                    break
                try:
                    msgs = fetch.result()
                except Exception as exc:  # NATS away: wait and try again
                    if stop.is_set():
                        break
                    log.warning("fetch failed: %s", exc, extra={"worker": self.name})
                    await asyncio.sleep(0.5)
                    continue
                if not msgs:
                    continue
                await self.process(await self._more(msgs))
        finally:
            stopper.cancel()
