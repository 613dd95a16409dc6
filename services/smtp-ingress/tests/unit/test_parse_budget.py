"""No SMTP argument costs the parser more than BOUND of CPU per 64 KiB (issue 12.2): the patterns of
parser.py and headers.py are linear, and the session bounds their input (512-octet command lines,
RFC 5321 §4.5.3.1.4; MAIL/RCPT a little more for their parameters) long before this size. Fed 64 KiB
anyway, each hostile shape below costs well under a millisecond per KiB. Time is the thread's CPU time,
best of three, so a busy machine does not fail the test."""

from __future__ import annotations

import pytest

from mailflow.errors import PermFailure
from mailflow_smtp_ingress import headers, parser
from tests.support import cpu_seconds

SIZE = 64 * 1024
BOUND = 0.1


def quietly(fn, arg) -> None:
    try:
        fn(arg)
    except PermFailure:
        pass


def parse_address(text: str):
    return parser.parse_address(text, utf8=True)


HOSTILE = [
    (parse_address, "a." * (SIZE // 2) + "!@example.test"),
    (parse_address, "a@" + "a-" * (SIZE // 2) + "."),
    (parse_address, "a@" + "a." * (SIZE // 2) + "-"),
    (parse_address, '"' + "\\a" * (SIZE // 2)),
    (parse_address, "@a,@b:" * (SIZE // 6) + "a@b"),
    (parser.split_path, "<" + '"\\' * (SIZE // 2)),
    (parser.parse_params, "A=B " * (SIZE // 4)),
    (parser.xtext_decode, "+" * SIZE),
    (parser.xtext_decode, "+4" * (SIZE // 2)),
    (parser.sanitize_helo, "\x00" * SIZE),
    (lambda data: parser.check_text(data, 1000), b"a\r" * (SIZE // 2)),
    (parser.unstuff, b"\r\n.." * (SIZE // 4)),
    (lambda head: headers.add_missing_id_and_date(head, "<x@y>", "now"), b"date-x:\r\nmessage-id " * (SIZE // 20)),
]


@pytest.mark.parametrize(("fn", "text"), HOSTILE)
def test_no_hostile_argument_costs_more_than_the_bound(fn, text):
    assert cpu_seconds(quietly, fn, text) < BOUND
