"""A body's parse, done once when it is stored: mailflow.mime's JSON (compressed when that is smaller),
its SHA-256, the day of its Date: header for SENTBEFORE/SENTON/SENTSINCE (search.sent_day), and what
SORT and THREAD compare (sortkeys.SortKeys).

mime.parse never raises (bad input becomes the best structure it can make), so neither does prepare.
Stored parses start with "[" (plain JSON), 0x78 (zlib) or 0x01 (raw deflate with the DICT_V1 preset
dictionary, which roughly halves a typical parse). DICT_V1 must never change: a new one is 0x02.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from mailflow import mime
from mailflow.store.search import sent_day
from mailflow_mailbox_store import sortkeys

DICT_V1 = (
    b'["received","from","to","subject","date","message-id","mime-version","1.0","content-type",'
    b'"content-transfer-encoding","TEXT","PLAIN","HTML","MULTIPART","ALTERNATIVE","MIXED","RELATED",'
    b'["CHARSET","utf-8"],["CHARSET","us-ascii"],"7BIT","8BIT","QUOTED-PRINTABLE","BASE64","BOUNDARY",'
    b'"text/plain; charset=utf-8","text/plain; charset=\\"us-ascii\\"","multipart/alternative; boundary=",'
    b" (Mailflow) with ESMTP id \\tfor <; Mon, ; Tue, ; Wed, ; Thu, ; Fri, ; Sat, ; Sun, Jan Feb Mar Apr May"
    b" Jun Jul Aug Sep Oct Nov Dec 2026 +0000 "
    b'from localhost [127.0.0.1]) by null,null,[[null,null,".com",".test",".org",".net"]]'
)
_V1 = b"\x01"


@dataclass(frozen=True, slots=True)
class Prepared:
    sha: bytes
    size: int
    parsed: bytes  # as stored: pack(mime.to_json(...))
    sent_day: int | None
    keys: sortkeys.SortKeys


def pack(parsed_json: bytes) -> bytes:
    if len(parsed_json) > 120:
        c = zlib.compressobj(1, zlib.DEFLATED, -15, zdict=DICT_V1)
        packed = _V1 + c.compress(parsed_json) + c.flush()
        if len(packed) < len(parsed_json):
            return packed
    return parsed_json


def unpack(stored: bytes) -> bytes:
    stored = bytes(stored)
    head = stored[:1]
    if head == b"[":
        return stored
    if head == _V1:
        d = zlib.decompressobj(-15, zdict=DICT_V1)
        return d.decompress(stored[1:]) + d.flush()
    return zlib.decompress(stored)


def prepare(body: bytes) -> Prepared:
    parsed = mime.parse(body)
    return Prepared(
        hashlib.sha256(body).digest(),
        len(body),
        pack(mime.to_json(parsed)),
        sent_day(parsed.envelope.date),
        sortkeys.of(parsed),
    )
