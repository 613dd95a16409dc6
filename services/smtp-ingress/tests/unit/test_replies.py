"""Replies on the wire and the one mapping from exceptions to replies."""

from __future__ import annotations

import pytest

from mailflow.errors import PermFailure, ServiceUnavailable, TempFailure
from mailflow.sasl import AuthzidRefused, SaslError
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress import replies as R


def test_wire_format():
    assert R.R250_OK.wire == b"250 2.0.0 Ok\r\n"
    assert R.R354_GO_AHEAD.wire == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert R.multiline(250, ["a", "b", "c"]).wire == b"250-a\r\n250-b\r\n250 c\r\n"
    assert R.Reply(550, "5.1.1", "one\ntwo").wire == b"550-5.1.1 one\r\n550 5.1.1 two\r\n"  # RFC 2034 §4


@pytest.mark.parametrize(
    "exc,reply",
    [
        (PermFailure(R.R550_NO_SUCH_USER), R.R550_NO_SUCH_USER),
        (TempFailure(R.R452_TOO_MANY_RECIPIENTS), R.R452_TOO_MANY_RECIPIENTS),
        (ServiceUnavailable("down"), R.R451_TRY_LATER),
        (TimeoutError(), R.R451_TRY_LATER),
        (TimeoutError(), R.R451_TRY_LATER),
        (ConnectionResetError(), R.R451_TRY_LATER),
        (OSError("disk"), R.R451_TRY_LATER),
        (PermFailure(R.R501_BAD_ADDRESS, "bad domain"), R.R501_BAD_ADDRESS),
        (SaslError("response is not base64"), R.R501_AUTH_RESPONSE.with_text("Cannot decode the response: response is not base64")),
        (AuthzidRefused("authorization identity differs"), R.R501_AUTH_RESPONSE.with_text("Cannot decode the response: authorization identity differs")),
    ],
)
def test_to_reply_table(exc, reply):
    assert R.to_reply(exc, "ref1") == reply


def test_closing_keeps_the_reason_and_says_421():
    assert R.closing(R.R451_TRY_LATER) == R.Reply(
        421, "4.3.0", "Mail system temporarily unavailable, try again later; closing connection"
    )
    assert R.closing(R.R550_NO_SUCH_USER).status == "4.3.0"  # 421 never carries a 5.x.x code


def test_unclassified_error_is_temporary_and_shows_only_a_ref():
    before = metrics.INTERNAL_ERRORS._value.get()
    r = R.to_reply(KeyError("secret-host.internal:5432"), "abcd1234")
    assert metrics.INTERNAL_ERRORS._value.get() == before + 1
    assert r.code == 451 and r.status == "4.3.0"
    assert "abcd1234" in r.text and "secret" not in r.text and "KeyError" not in r.text


def test_every_constant_carries_a_matching_enhanced_code():
    for name, value in vars(R).items():
        if isinstance(value, R.Reply) and value.code != 354:  # 354: RFC 2034 leaves the go-ahead bare
            assert value.status and value.status[0] == str(value.code)[0], name
