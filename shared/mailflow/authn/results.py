"""The Authentication-Results header (RFC 8601): `header(...)` writes ours, `remove_ours(message, id)`
takes out every incoming one that claims our authserv-id first (§5: a border MTA must, or a forger
could hand the reader a "pass" in our name).

What goes in is ours: result words from closed sets, domains, selectors, the first characters of b=
(RFC 6008), and reasons the checks wrote. Every property value is written as an RFC 2045 token, or as
a quoted-string (backslash before `"` and `\\`) when it is not one; reasons always as a quoted-string
with control and non-ASCII characters replaced and at most MAX_REASON characters, so no input can end
the header or add a field. Nothing here raises: a header block that cannot be read as fields is left
as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailflow.authn import Arc, Dkim, Dmarc, Spf

MAX_REASON = 200  # characters of a reason kept in the header
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 2045: CHARs but SPACE, CTLs, tspecials (one class: linear)
_NAME = b"authentication-results"


def value(text: str) -> str:
    """RFC 2045 `value`: the text as a token when it is one, else as a quoted-string."""
    if _TOKEN.fullmatch(text):
        return text
    return quoted(text)


def quoted(text: str) -> str:
    safe = text[:MAX_REASON]
    if not (safe.isascii() and safe.isprintable()):  # the common case needs no pass of its own
        safe = "".join(c if 32 <= ord(c) < 127 else "?" for c in safe)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(result: str, text: str) -> str:
    """` reason="..."` for an SPF, DKIM or ARC result that needs one: a pass or a none says it all, and
    every octet of the header travels with the message through every hop (the ~160 of those reasons
    cost ~4 % of ingest). DMARC's always has its reason: which identifier aligned, or why none did."""
    return f" reason={quoted(text)}" if text and result not in ("pass", "none") else ""


def spf_result(s: Spf) -> str:
    ptype = "smtp.mailfrom" if s.identity == "mailfrom" else "smtp.helo"
    return f"spf={s.result}{_reason(s.result, s.reason)} {ptype}={value(s.domain)}"


def dkim_result(d: Dkim) -> str:
    props = [("header.d", d.domain), ("header.s", d.selector), ("header.a", d.algorithm), ("header.b", d.b)]
    return f"dkim={d.result}{_reason(d.result, d.reason)}" + "".join(f" {k}={value(v)}" for k, v in props if v)


def arc_result(a: Arc) -> str:
    comment = f" (i={a.instances})" if a.instances else ""
    return f"arc={a.result}{comment}{_reason(a.result, a.reason)}"


def dmarc_result(d: Dmarc) -> str:
    comment = f" (p={d.published} dis={d.policy})" if d.published else ""
    reason = f" reason={quoted(d.reason)}" if d.reason else ""
    return f"dmarc={d.result}{comment}{reason}" + (f" header.from={value(d.domain)}" if d.domain else "")


def header(
    authserv_id: str,
    spfs: Sequence[Spf] = (),
    dkims: Sequence[Dkim] | None = None,
    arc: Arc | None = None,
    dmarc: Dmarc | None = None,
) -> bytes:
    """One Authentication-Results field, folded one result a line, CRLF-terminated. A check that did
    not run is left out (`dkims` None: not run; empty: run, no signature: dkim=none); with none at all
    it says `none` (§2.2)."""
    results = [spf_result(s) for s in spfs]
    if dkims is not None:
        results += [dkim_result(d) for d in dkims] or ["dkim=none"]
    if arc is not None:
        results.append(arc_result(arc))
    if dmarc is not None:
        results.append(dmarc_result(dmarc))
    body = ";\r\n\t".join(results) if results else "none"
    return f"Authentication-Results: {value(authserv_id)};\r\n\t{body}\r\n".encode()


# --- forged headers -------------------------------------------------------------------------------


def authserv_id(field_value: bytes) -> bytes | None:
    """The authserv-id an Authentication-Results value starts with, lower case (after CFWS: folding
    white space and nested comments); None when there is none. One pass over the value."""
    v, i, n, depth = field_value, 0, len(field_value), 0
    while i < n:  # [CFWS]
        c = v[i]
        if depth:
            if c == 0x5C:  # quoted-pair inside a comment
                i += 1
            elif c == 0x28:
                depth += 1
            elif c == 0x29:
                depth -= 1
        elif c == 0x28:
            depth = 1
        elif c not in b" \t\r\n":
            break
        i += 1
    if i >= n:
        return None
    if v[i] == 0x22:  # quoted-string
        out, i = bytearray(), i + 1
        while i < n and v[i] != 0x22:
            if v[i] == 0x5C and i + 1 < n:
                i += 1
            out.append(v[i])
            i += 1
        return bytes(out).lower()
    j = i
    while j < n and v[j] > 32 and v[j] < 127 and chr(v[j]) not in _TSPECIALS:
        j += 1
    return v[i:j].lower() or None


def remove_ours(message: bytes, ours: str) -> bytes:
    """`message` without the Authentication-Results fields of its header block whose authserv-id is
    `ours` (case-insensitive; folded fields whole). Linear in the header block: one lower-case copy
    of it and a `find` per such field; a message without one is returned as it is, uncopied."""
    end = message.find(b"\r\n\r\n")
    head_end = len(message) if end < 0 else end + 2
    lowered = message[:head_end].lower()
    if _NAME not in lowered:
        return message
    target = ours.lower().encode("utf-8", "replace")
    starts = [0] if lowered.startswith(_NAME) else []
    at = lowered.find(b"\n" + _NAME)
    while at >= 0:  # "\n" then the name begins a field: a continuation line begins with SP or HTAB
        starts.append(at + 1)
        at = lowered.find(b"\n" + _NAME, at + 1)
    cuts: list[tuple[int, int]] = []
    for start in starts:
        stop = _field_end(lowered, start)
        colon = start + len(_NAME)
        while colon < stop and lowered[colon] in b" \t":
            colon += 1
        if colon < stop and lowered[colon] == 0x3A and authserv_id(message[colon + 1 : stop]) == target:
            cuts.append((start, stop))
    if not cuts:
        return message
    out, last = [], 0
    for a, b in cuts:
        out.append(message[last:a])
        last = b
    out.append(message[last:])
    return b"".join(out)


def _field_end(head: bytes, start: int) -> int:
    """Where the field starting at `start` ends: after the line end of its last line (a line that
    starts with SP or HTAB continues it)."""
    pos, limit = start, len(head)
    while True:
        nl = head.find(b"\n", pos)
        if nl < 0:
            return limit
        if nl + 1 >= limit or head[nl + 1] not in b" \t":
            return nl + 1
        pos = nl + 1
