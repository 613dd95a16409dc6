"""A failing test's report names the processes of its running stacks that died (tests/support/stacks.py)."""

from __future__ import annotations

import subprocess
import sys

from mailflow.stack import Ports, Proc, Stack
from tests.support import stacks


def test_post_mortem_lists_the_dead_processes_of_running_stacks_only(tmp_path):
    st = Stack(tmp_path / "stack", Ports(), nats_url="nats://127.0.0.1:1", services=()).start()
    log = tmp_path / "stack" / "logs" / "queue.log"
    log.write_text("queue: cannot open the database\n")
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    st.procs[("queue", 0)] = Proc("queue", 0, dead, 0, log)
    try:
        report = stacks.post_mortem()
        assert "queue exited with 3" in report and "cannot open the database" in report
    finally:
        st.stop()
    assert "queue exited" not in stacks.post_mortem()
