"""mailflow.mime's work budget (issue 12.2): no message costs more than BOUND of CPU per 64 KiB, and a
message past a cap is still parsed into a valid (degraded) structure with every byte fetchable.

Before the budget, a Content-Type parameter followed by folded whitespace cost ~20 s per 64 KiB (a
backtracking pattern), and a boundary containing ':' made every part's header run to the end of the
message (quadratic). The inputs below are the hostile shapes found for each pattern and loop; the
property test builds more by repeating random hostile fragments up to 64 KiB. Time is the thread's
CPU time, best of three, so a busy machine does not fail the test; the bound is far above what a
parse costs here (a few ms) and far below any superlinear case.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow import mime
from mailflow_mailbox_store.sections import section
from tests.support import cpu_seconds

SIZE = 64 * 1024
BOUND = 0.1  # seconds of CPU for SIZE octets of input (a parse here costs 1-25 ms)


def header(field: bytes) -> bytes:
    return field + b"\r\n\r\nbody\r\n"


def nested(n: int) -> bytes:
    return b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(n))


HOSTILE = {
    "parameter then spaces": lambda n: header(b"Content-Type: text/plain; a=b" + b" " * n + b"x"),
    "parameter then folded whitespace": lambda n: header(b"Content-Type: text/plain; a=b" + b"\r\n " * (n // 3) + b"x"),
    "disposition then spaces": lambda n: header(b"Content-Disposition: attachment; a=b" + b" " * n + b"x"),
    "parameter name then spaces": lambda n: header(b"Content-Type: text/plain; a" + b" " * n + b"x"),
    "many parameters": lambda n: header(b"Content-Type: text/plain" + b";a=" * (n // 3)),
    "many RFC 2231 sections": lambda n: header(
        b"Content-Type: text/plain" + b"".join(b"; a*%d*=x" % (i % 999) for i in range(n // 10))
    ),
    "open comments": lambda n: header(b"Content-Type: text/plain; a=b" + b" (" * (n // 2)),
    "quoted backslashes": lambda n: header(b'Content-Type: text/plain; a="' + b"\\" * n),
    "address words": lambda n: header(b"From: " + b"a " * (n // 2)),
    "address quotes": lambda n: header(b"From: " + b'"a' * (n // 2)),
    "address colons": lambda n: header(b"From: a@b" + b":" * n),
    "address angles": lambda n: header(b"From: " + b"<" * n),
    "address list of @": lambda n: header(b"From: " + b"a@," * (n // 3)),
    "address groups": lambda n: header(b"From: a:" + b"b:" * (n // 2)),
    "address comments": lambda n: header(b"From: a@b " + b"(a\\)" * (n // 4)),
    "simple address list": lambda n: header(b"To: " + b"a@b," * (n // 4)),
    "encoded word starts": lambda n: header(b"Subject: " + b"=?" * (n // 2)),
    "encoded words": lambda n: header(
        b"Subject: " + b"".join(b"=?iso-8859-%d?q?a?= " % (1 + i % 9) for i in range(n // 20))
    ),
    "no colon": lambda n: header(b"a" * n),
    "many fields": lambda n: header(b"a: b\r\n" * (n // 6)),
    "continuation lines": lambda n: header(b"a: b" + b"\r\n c" * (n // 4)),
    "empty parts": lambda n: b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n" * (n // 5),
    "boundary with a colon": lambda n: b'Content-Type: multipart/mixed; boundary="a:"\r\n\r\n' + b"--a:\r\n" * (n // 6),
    "nested multiparts": lambda n: nested(n // 55),
    "nested messages": lambda n: b"Content-Type: message/rfc822\r\n\r\n" * (n // 32),
    "deep nesting and dash lines": lambda n: nested(50) + b"\r\n--b" * (n // 4 - 600),
    "parts with headers": lambda n: b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: text/plain; charset=x; name=y\r\n\r\nz\r\n" * (n // 52),
}


@pytest.mark.parametrize("shape", HOSTILE)
def test_no_hostile_shape_costs_more_than_the_bound(shape):
    raw = HOSTILE[shape](SIZE - 100)  # the hostile part stays inside: no truncation, whole lines
    bound = BOUND * len(raw) / SIZE
    assert 0.9 < len(raw) / SIZE < 1.3
    assert cpu_seconds(mime._parse, raw) < bound  # _parse: a bug must not hide behind the fallback
    p = mime.parse(raw)
    assert cpu_seconds(section, raw, p, "HEADER.FIELDS (FROM TO)") < bound


FRAGMENTS = [
    b" ", b"\t", b"\r\n", b"\r\n ", b"\n", b";", b"=", b'"', b"\\", b"(", b")", b"<", b">", b"@", b",", b":",
    b".", b"[", b"]", b"=?", b"?=", b"?q?", b"a", b"--b", b"--b--", b"*0*", b"'", b"%4", b"\x00", b"\xff",
]  # fmt: skip
PREFIXES = [
    b"", b"From: ", b"To: a ", b"Subject: ", b"Content-Type: text/plain; a=", b"Content-Disposition: x;",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n", b"Content-Type: message/rfc822\r\n\r\n",
    b'Content-Type: multipart/mixed; boundary="b:"\r\n\r\n--b:\r\n',
]  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PREFIXES), st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6))
def test_property_repeated_hostile_fragments_cost_less_than_the_bound(prefix, motif):
    unit = b"".join(motif)
    raw = (prefix + unit * (SIZE // len(unit) + 1))[:SIZE]
    assert cpu_seconds(mime._parse, raw) < BOUND


# --- what a message past a cap becomes ----------------------------------------------------------------


def test_a_parameter_followed_by_folded_whitespace_keeps_its_value():
    raw = header(b"Content-Type: text/plain; charset=utf-8" + b"\r\n " * 20_000 + b"(comment)")
    assert mime.parse(raw).body.params == (("CHARSET", "utf-8"),)


def test_parts_past_the_cap_stay_in_the_epilogue_and_the_message_stays_fetchable():
    raw = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n\r\nx\r\n" * (mime.MAX_PARTS + 10)
    p = mime.parse(raw)
    assert len(p.body.parts) == mime.MAX_PARTS - 1
    assert section(raw, p, "TEXT") == raw[raw.index(b"\r\n\r\n") + 4 :]


def test_a_header_past_the_cap_continues_as_body():
    raw = b"Subject: x\r\n" + b"X-Long: y\r\n" * (mime.MAX_HEADER_BYTES // 11 + 100) + b"\r\nbody"
    p = mime.parse(raw)
    assert mime.MAX_HEADER_BYTES - 11 < p.body.body_start <= mime.MAX_HEADER_BYTES and p.body.end == len(raw)
    assert p.headers[0] == ("subject", "x")


def test_fields_past_the_cap_are_not_read():
    def fields(n: int) -> bytes:
        return b"X-A: b\r\n" * n + b"Content-Type: text/html\r\n\r\nbody"

    assert mime.parse(fields(mime.MAX_FIELDS - 1)).body.subtype == "HTML"
    assert mime.parse(fields(mime.MAX_FIELDS)).body.subtype == "PLAIN"


def test_parameters_past_the_cap_are_not_read():
    raw = header(b"Content-Type: text/plain" + b"; x=y" * mime.MAX_PARAMS + b"; charset=utf-8")
    assert ("CHARSET", "utf-8") not in mime.parse(raw).body.params


def test_addresses_past_the_cap_are_dropped_whole():
    n = mime.MAX_ADDRESS_TOKENS
    p = mime.parse(header(b"From: a@b\r\nTo: " + b"(c) x@y, " * n))
    assert p.envelope.from_ == (mime.Address(None, None, "a", "b"),)
    assert 0 < len(p.envelope.to) < n and all(a.host == "y" for a in p.envelope.to)


def test_encoded_words_past_the_cap_stay_encoded():
    p = mime.parse(header(b"Subject: " + b"=?utf-8?q?a?= x " * (mime.MAX_WORDS + 1)))
    subject = dict(p.headers)["subject"]
    assert subject.startswith("a x a x") and subject.endswith("=?utf-8?q?a?= x")


def test_the_first_envelope_gets_the_budget_before_the_parts():
    inner = b"Content-Type: message/rfc822\r\n\r\nFrom: " + b"(c) x@y, " * mime.MAX_ADDRESS_TOKENS + b"\r\n\r\n"
    p = mime.parse(b"From: a@b\r\n" + inner)
    assert p.envelope.from_ == (mime.Address(None, None, "a", "b"),)
