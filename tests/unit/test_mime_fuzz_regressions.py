"""Inputs the mime fuzz target (tests/fuzz) found, each named for what it broke. Every part of a parse
lies inside its parent: start <= body_start <= end, within the parent's body."""

from __future__ import annotations

from mailflow import mime


def _nested(part: mime.BodyPart, lo: int, hi: int) -> list[str]:
    bad = []
    if not (lo <= part.start <= part.body_start <= part.end <= hi):
        bad.append(f"{part.type}/{part.subtype} {part.start},{part.body_start},{part.end} not in {lo}..{hi}")
    for child in part.parts:
        bad += _nested(child, part.body_start, part.end)
    return bad


# An inner boundary line right before the outer one: the inner multipart ended before the CRLF of the
# outer boundary, but the empty part after "--innerjunk" starts after that CRLF, past its parent's end
# (BODY[1.2] was bytes outside BODY[1]). Now the inner multipart keeps that CRLF: it ends the
# "--innerjunk" line.
INNER_BOUNDARY_THEN_OUTER = (
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--innerjunk\r\n--outer--\r\n"
)


def test_inner_boundary_then_outer_boundary_keeps_parts_nested():
    p = mime.parse(INNER_BOUNDARY_THEN_OUTER)
    assert _nested(p.body, 0, len(INNER_BOUNDARY_THEN_OUTER)) == []


def test_inner_boundary_then_outer_boundary_sections_stay_inside():
    p = mime.parse(INNER_BOUNDARY_THEN_OUTER)
    inner = p.body.parts[0]
    assert INNER_BOUNDARY_THEN_OUTER[inner.body_start : inner.end].endswith(b"--innerjunk\r\n")
    assert (inner.parts[1].start, inner.parts[1].end) == (inner.end, inner.end)


# The same end, found by the budget test's deep nesting: a part with a header and no body, right before
# the outer boundary of a multipart left unclosed. The part's blank line is the CRLF before that boundary
# line; the inner multipart ended before it, the part after it.
EMPTY_PART_THEN_OUTER = (
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
    b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n"
    b"Content-Type: text/plain\r\n\r\n--outer--\r\n"
)


def test_empty_part_then_outer_boundary_keeps_parts_nested():
    p = mime.parse(EMPTY_PART_THEN_OUTER)
    assert _nested(p.body, 0, len(EMPTY_PART_THEN_OUTER)) == []
