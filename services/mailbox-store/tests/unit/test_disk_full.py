"""A full disk under the store is told apart from every other storage failure: the writer answers
InsufficientStorage (REST 503 with "storage": "full"), which the store client raises again, so delivery
defers with 452 4.3.1 instead of a generic 451 4.3.0."""

from __future__ import annotations

import errno
import sqlite3

import orjson
import pytest

from mailflow.errors import InsufficientStorage, ServiceUnavailable
from mailflow.store.client import _raise
from mailflow.store.transport import Response
from mailflow_mailbox_store.db import disk_full


def _caused(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    "exc,full",
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (sqlite3.OperationalError("database or disk is full"), True),
        (_caused(RuntimeError("write failed"), OSError(errno.ENOSPC, "full")), True),
        (OSError(errno.EIO, "I/O error"), False),
        (sqlite3.OperationalError("database is locked"), False),
        (ValueError("nope"), False),
    ],
)
def test_disk_full_is_recognised(exc, full):
    assert disk_full(exc) is full


def test_client_raises_insufficient_storage_for_a_full_store():
    body = orjson.dumps({"detail": "storage full", "storage": "full"})
    with pytest.raises(InsufficientStorage):
        _raise(Response(503, {}, body))
    with pytest.raises(ServiceUnavailable) as other:
        _raise(Response(503, {}, orjson.dumps({"detail": "storage temporarily unavailable"})))
    assert not isinstance(other.value, InsufficientStorage)
