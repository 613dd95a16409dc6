"""The compact wire format between mailbox-store and its client, for calls that carry message bytes.

A frame is: 4 bytes big-endian length of a JSON header, the JSON header {"h": <anything>, "n": [sizes]},
then the parts' raw bytes one after the other (no base64). Numbers that come in bulk (100k UIDs,
flags, MODSEQs) travel as packed arrays in parts too (`pack_array`/`unpack_array`), so neither side parses
100k JSON numbers. A frame that does not add up raises ValueError.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

CONTENT_TYPE = "application/x-mailflow-frame"
_LEN = struct.Struct(">I")


def header(head: Any, sizes: Sequence[int]) -> bytes:
    h = orjson.dumps({"h": head, "n": list(sizes)})
    return _LEN.pack(len(h)) + h


def encode(head: Any, parts: Sequence[bytes] = ()) -> bytes:
    return header(head, [len(p) for p in parts]) + b"".join(parts)


def stream(head: Any, sizes: Sequence[int], parts: Iterator[bytes]) -> Iterator[bytes]:
    """The same frame, produced piece by piece (for a streamed response)."""
    yield header(head, sizes)
    yield from parts


def decode(data: bytes) -> tuple[Any, list[bytes]]:
    if len(data) < 4:
        raise ValueError("short frame")
    (n,) = _LEN.unpack_from(data)
    h = orjson.loads(data[4 : 4 + n])
    if not isinstance(h, dict) or "n" not in h:
        raise ValueError("bad frame header")
    view = memoryview(data)
    parts, pos = [], 4 + n
    for size in h["n"]:
        if not isinstance(size, int) or size < 0 or pos + size > len(data):
            raise ValueError("frame shorter than its header says")
        parts.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(data):
        raise ValueError("frame longer than its header says")
    return h.get("h"), parts


def pack_array(a: array) -> bytes:
    """An array's bytes in little-endian order (the wire's order)."""
    if a.itemsize > 1 and sys.byteorder == "big":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def unpack_array(data: bytes, typecode: str) -> array:
    a = array(typecode)
    a.frombytes(data)
    if a.itemsize > 1 and sys.byteorder == "big":
        a.byteswap()
    return a


def uid_ranges(uids: Sequence[int]) -> list[list[int]]:
    """[1,2,3,7,9,10] -> [[1,3],[7,7],[9,10]] (sorted, duplicates dropped): how UID lists travel."""
    out: list[list[int]] = []
    for u in sorted(set(uids)):
        if out and u == out[-1][1] + 1:
            out[-1][1] = u
        else:
            out.append([u, u])
    return out
