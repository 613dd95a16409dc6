"""The vacation form's script (mailflow_web.vacation): any text the form takes comes back from the Sieve
checker as exactly that text, and only a script the form wrote is read back as form settings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.sieve.script import Vacation, compile
from mailflow_web import vacation
from mailflow_web.vacation import FormError, Settings, build, parse_form, quoted, read

# What the form lets through: no control characters but line breaks and tabs in the message.
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029") | st.sampled_from('"\\\r\n.\t$;}'), min_size=1, max_size=200)


@settings(max_examples=300, deadline=None)
@given(message=TEXT, subject=TEXT)
def test_any_text_means_itself(message, subject):
    subject = subject.replace("\r", "").replace("\n", "")
    try:
        v = parse_form(subject, message, "3", "", "my filters")
    except FormError:
        return  # empty after trimming, or a subject of control characters only
    (vac, inc) = compile(build(v)).commands
    assert vac.reason == v.message and (vac.subject or "") == subject and inc.name == "my filters"
    assert read(build(v)) == v


@pytest.mark.parametrize("text", ['"', "\\", '\\"', 'a"; discard; "', "\r\n.\r\n", "text:\r\n.\r\n"])
def test_quoted_strings_hold_hostile_text(text):
    (vac,) = compile(f'require "vacation";\r\nvacation {quoted(text)};\r\n'.encode()).commands
    assert vac == Vacation(text)


def test_the_message_keeps_crlf_and_loses_outer_blank_lines():
    assert parse_form("", "\r\na\nb\rc\r\n\r\n", "7", "", None).message == "a\r\nb\r\nc"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (("s\r\nBcc: x", "m", "7", ""), "one line"),
        (("s", "  \r\n ", "7", ""), "needs a message"),
        (("s", "m\x00", "7", ""), "control characters"),
        (("s", "m", "0", ""), "1 to 365"),
        (("s", "m", "366", ""), "1 to 365"),
        (("s", "m", "1e2", ""), "1 to 365"),
        (("s", "m", "7", "no-at-sign"), "not a mail address"),
        (("s", "m", "7", 'a@b.test"'), "not a mail address"),
        (("s", "m", "7", ",".join(f"u{i}@b.test" for i in range(21))), "at most 20"),
        (("s" * 201, "m", "7", ""), "at most 200"),
    ],
)
def test_bad_input_is_refused(fields, error):
    with pytest.raises(FormError, match=error):
        parse_form(*fields, None)


def test_only_the_forms_scripts_are_read_back():
    made = build(Settings("s", "m", 7, ("a@b.test",), None))
    assert read(made) == Settings("s", "m", 7, ("a@b.test",), None)
    assert read(made.replace(vacation.MARKER.encode(), b"# mine")) is None
    assert read(made + b'discard;\r\n') is None
    assert read(made.replace(b"vacation :days", b"vacation :mime :days")) is None  # the form never writes :mime
    assert read(vacation.MARKER.encode() + b'\r\nrequire "vacation";\r\nvacation "x"') is None  # does not parse
