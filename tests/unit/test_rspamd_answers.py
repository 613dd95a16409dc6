"""rspamd's /checkv2 answers (mailflow.rspamd.parse_answer): what is taken from them, and that no answer,
however odd, becomes anything but a Verdict or RspamdUnavailable; proposed header fields never carry a
line of their own into a message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.rspamd import ACTIONS, MAX_HEADERS, Envelope, RspamdUnavailable, parse_answer, request_headers


def answer(**kw) -> bytes:
    return json.dumps({"action": "no action", "score": 1.5, "required_score": 15, **kw}).encode()


def test_the_envelope_headers_one_rcpt_each():
    env = Envelope("192.0.2.1", "mx.elsewhere.test", "", ["a@x.test", "b@x.test"], "Q1", "alice@x.test", "mx.x.test")
    assert request_headers(env) == [
        ("IP", "192.0.2.1"), ("Helo", "mx.elsewhere.test"), ("From", ""), ("Queue-Id", "Q1"),
        ("Rcpt", "a@x.test"), ("Rcpt", "b@x.test"), ("User", "alice@x.test"), ("MTA-Name", "mx.x.test"),
    ]  # fmt: skip


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_is_taken(action):
    assert parse_answer(answer(action=action)).action == action


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502 Bad Gateway</html>", b"[]", b'{"score": 3}', answer(action="discard"), answer(action=None)],
)
def test_anything_else_is_unavailable(body):
    with pytest.raises(RspamdUnavailable):
        parse_answer(body)


def test_milter_headers_are_checked_refolded_and_bounded():
    v = parse_answer(
        answer(
            action="add header",
            milter={
                "add_headers": {
                    "X-Spamd-Result": {"value": "default: True [8 / 15];\r\n\tA(8)[];\n B(0)[]", "order": 0},
                    "X-Plain": "value",
                    "X-List": [{"value": "one"}, "two", 3],
                    "Bcc: victim@x.test\r\nX-Evil": "injected",
                    "": "empty name",
                    "X-Long": "x" * 10_000,
                    **{f"X-Many-{i}": "v" for i in range(40)},
                },
                "remove_headers": {"X-Spam": 0, "Bad Name": 1},
            },
        )
    )
    assert v.add_headers[0] == ("X-Spamd-Result", "default: True [8 / 15];\r\n\tA(8)[];\r\n\tB(0)[]")
    assert v.add_headers[1:4] == [("X-Plain", "value"), ("X-List", "one"), ("X-List", "two")]
    assert all(":" not in n and " " not in n and "\n" not in n for n, _ in v.add_headers)
    assert len(v.add_headers) <= MAX_HEADERS and max(len(val) for _, val in v.add_headers) <= 2048
    assert v.remove_headers == ["X-Spam"]


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_any_json_gives_a_verdict_or_unavailable(data):
    for body in (json.dumps(data).encode(), answer(action="add header", milter=data, messages=data, subject=data)):
        try:
            v = parse_answer(body)
        except RspamdUnavailable:
            continue
        for name, value in v.add_headers:
            assert name and ":" not in name and all(33 <= ord(ch) < 127 for ch in name)
            assert all(line.startswith("\t") for line in value.split("\r\n")[1:])
            assert "\n" not in value.replace("\r\n\t", "")
