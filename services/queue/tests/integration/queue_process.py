"""A queue process for the replica tests: `python -m mailflow_queue`, with two seams from the environment.

MAILFLOW_TEST_CLAIM_S: how long the scheduler claims due jobs (scheduler.CLAIM_S, 15 s) — shorter, so
that a test sees a lapsed claim go out again without waiting that long.
MAILFLOW_TEST_PAUSE_AT_ACT=1: the process stops itself (SIGSTOP, every thread) the first time its
scheduler is about to check its lease before a publish: the worst moment for a pause, with work
claimed in the database (due jobs, or a DSN read to send) and not yet out. The test sends SIGCONT.
"""

from __future__ import annotations

import os
import signal

from mailflow_queue import __main__, app
from mailflow_queue.lease import Term
from mailflow_queue.scheduler import CLAIM_S, Scheduler


class SeamedScheduler(Scheduler):
    paused = False

    def __init__(self, *args, **kw):
        super().__init__(*args, claim_s=float(os.environ.get("MAILFLOW_TEST_CLAIM_S", CLAIM_S)), **kw)

    def act(self, term: Term) -> None:
        if os.environ.get("MAILFLOW_TEST_PAUSE_AT_ACT") and not SeamedScheduler.paused:
            SeamedScheduler.paused = True
            print("pausing before the lease check of a publish", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
            print("woken up", flush=True)
        super().act(term)


if __name__ == "__main__":
    app.Scheduler = SeamedScheduler
    __main__.main()
