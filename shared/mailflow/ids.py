"""Identifiers: queue ids (sortable by time, safe as a NATS subject token and a file name) and refs."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words; 31 symbols


def _encode(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def queue_id() -> str:
    """16 characters: 9 of milliseconds since the epoch (good until year 2830), 7 random (27 bits)."""
    return _encode(int(time.time() * 1000), 9) + _encode(secrets.randbits(34), 7)


def derived_queue_id(seed: str) -> str:
    """A queue id that is always the same for the same `seed` (16 characters of its SHA-256, same
    alphabet): a message made again after a retry (Sieve's redirect) is the same message to the queue."""
    import hashlib

    return _encode(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:12], "big"), 16)


def trace_id() -> str:
    return secrets.token_hex(16)


def ref() -> str:
    """A short id printed to a client with an internal error, and logged with the traceback."""
    return secrets.token_hex(4)
