"""Fixtures for imap-pop3's tests: `srv` is the real server over the real mailbox-store (in this process,
see tests/support/store.py) with alice and bob. Helpers (Raw, make_message, Running...) live in
imaptest.py beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from imaptest import Running, settings_for  # noqa: E402


@pytest.fixture
def store(local_store):
    s = local_store.fresh()
    s.add_user("alice@example.test", "alice-pw")
    s.add_user("bob@example.test", "bob-pw")
    return s


@pytest.fixture
def srv(tmp_path, store):
    running = Running(settings_for(tmp_path), store)
    yield running
    running.stop()
