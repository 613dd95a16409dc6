"""FETCH BODY[section] (RFC 3501 §6.4.5) cut in the store: a message's bytes sliced with its stored parse
(mailflow.mime's part offsets), so that imap-pop3 gets headers and parts without whole bodies.

`section(raw, parsed, spec)` takes the section-spec as imap-pop3 writes it (Section.spec()): part numbers,
then HEADER, HEADER.FIELDS[.NOT] (names), TEXT or MIME. A part that does not exist gives b""; a spec that
can never be right raises ValueError (the REST call answers 422).
"""

from __future__ import annotations

import re

from mailflow import mime

_FIELD = re.compile(mime.FIELD.pattern + rb"(?:\n|\Z)")  # one field with its line end
_PART_NUMBERS = re.compile(r"[1-9][0-9]*(?:\.[1-9][0-9]*)*")
_FIELDS_SPEC = re.compile(r"HEADER\.FIELDS(\.NOT)? \((.*)\)", re.S)
_FIELD_NAME = re.compile(r' *(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s()"]+))', re.S)


def _field_names(text: str) -> set[str]:
    names, pos = set(), 0
    while pos < len(text):
        m = _FIELD_NAME.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad header-list: {text!r}")
        names.add(mime.unescape(m.group(1)) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if not names or text != text.strip():
        raise ValueError(f"bad header-list: {text!r}")
    return names


def section(raw: bytes, p: mime.ParsedMessage, spec: str) -> bytes:
    """The bytes of BODY[spec]; b"" for a part that does not exist. ValueError for a bad spec."""
    nums: list[int] = []
    text = spec
    if m := _PART_NUMBERS.match(spec):
        # a number too long to be a part index simply names no part
        nums = [int(x) if len(x) < 10 else 10**9 for x in m.group().split(".")]
        text = spec[m.end() :]
        if text:
            if not text.startswith(".") or len(text) == 1:
                raise ValueError(f"bad section-spec: {spec!r}")
            text = text[1:]
    word = text.upper()
    fields = None
    if word not in ("", "HEADER", "TEXT", "MIME"):
        if (fm := _FIELDS_SPEC.fullmatch(word)) is None:
            raise ValueError(f"bad section-spec: {spec!r}")
        fields = (_field_names(fm.group(2)), fm.group(1) is not None)
    if word == "MIME" and not nums:
        raise ValueError(f"bad section-spec: {spec!r}")

    message = p.body  # the body of the message whose HEADER/TEXT the spec means
    if nums:
        node = mime.part_at(p.body, nums)
        if node is None:
            return b""
        if word == "":
            return raw[node.body_start : node.end]
        if word == "MIME":
            return raw[node.start : node.body_start]
        if node.envelope is None or not node.parts:
            return b""  # HEADER and TEXT need a message/rfc822 part
        message = node.parts[0]
    elif word == "":
        return raw
    if word == "TEXT":
        return raw[message.body_start : message.end]
    head = raw[message.start : message.body_start]
    return head if fields is None else header_fields(head, fields[0], fields[1])


def header_fields(raw_header: bytes, names: set[str], exclude: bool) -> bytes:
    """The fields of `raw_header` named in `names` (or, with `exclude`, all others), folded lines and all,
    followed by the header's own blank line when it has one (RFC 3501 HEADER.FIELDS[.NOT])."""
    want = {n.lower() for n in names}
    out = []
    pos = 0
    while m := _FIELD.match(raw_header, pos):
        if (m.group(1).decode("latin-1").lower() in want) != exclude:
            out.append(m.group(0))
        pos = m.end()
    if raw_header.startswith(b"\r\n", pos):
        out.append(b"\r\n")
    elif raw_header.startswith(b"\n", pos):
        out.append(b"\n")
    return b"".join(out)
