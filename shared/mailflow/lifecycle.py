"""Process lifecycle: wait for SIGTERM/SIGINT, then stop intake, finish in-flight work, drain.

`Stopper` is an asyncio.Event set by the signals (and by tests directly). Services pass it to their
loops; a second signal while stopping exits at once (the runner's SIGKILL is the last resort).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)


class Stopper(asyncio.Event):
    def install(self) -> Stopper:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def _on_signal(self, sig: int) -> None:
        if self.is_set():
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            os._exit(1)
        log.info("%s received: stopping", signal.Signals(sig).name)
        self.set()
