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
    return local_store.fresh(("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw"))


@pytest.fixture
def srv(tmp_path, store):
    running = Running(settings_for(tmp_path), store)
    yield running
    running.stop()
