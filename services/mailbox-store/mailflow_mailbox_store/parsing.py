"""A body's parse, done once when it is stored: mailflow.mime's JSON (zlib'd when that is smaller),
its SHA-256, and the day of its Date: header for SENTBEFORE/SENTON/SENTSINCE.

mime.parse never raises (bad input becomes the best structure it can make), so neither does prepare.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from mailflow import mime


@dataclass(frozen=True, slots=True)
class Prepared:
    sha: bytes
    size: int
    parsed: bytes  # as stored: pack(mime.to_json(...))
    sent_day: int | None


def pack(parsed_json: bytes) -> bytes:
    if len(parsed_json) > 200:
        packed = zlib.compress(parsed_json, 1)
        if len(packed) < len(parsed_json):
            return packed
    return parsed_json


def unpack(stored: bytes) -> bytes:
    """mime JSON starts with '['; zlib with 0x78."""
    stored = bytes(stored)
    return stored if stored[:1] == b"[" else zlib.decompress(stored)


def sent_day(date_header: str | None) -> int | None:
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).date().toordinal()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def prepare(body: bytes) -> Prepared:
    parsed = mime.parse(body)
    return Prepared(
        hashlib.sha256(body).digest(), len(body), pack(mime.to_json(parsed)), sent_day(parsed.envelope.date)
    )
