"""mailflow.sasl: SASL PLAIN (RFC 4616) and LOGIN's base64 steps, as SMTP AUTH, IMAP AUTHENTICATE and
POP3 AUTH decode them. A table of responses and what each decodes to, or the error it gets."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.sasl import (
    MAX_IDENTITY,
    MAX_PASSWORD,
    AuthzidRefused,
    SaslError,
    decode_base64,
    decode_login,
    decode_plain,
)


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"\x00alice\x00pw", ("alice", "pw")),
        (b"alice\x00alice\x00p w", ("alice", "p w")),  # authzid = authcid: allowed
        (b"Alice@Example.test\x00alice@example.test\x00pw", ("alice@example.test", "pw")),  # case-insensitive
        ("\x00jörg@example.test\x00pässwort".encode(), ("jörg@example.test", "pässwort")),  # UTF-8
        (b"\x00a\x00" + b"p" * MAX_PASSWORD, ("a", "p" * MAX_PASSWORD)),
        (b"\x00" + b"u" * MAX_IDENTITY + b"\x00pw", ("u" * MAX_IDENTITY, "pw")),
    ],
)
def test_plain(raw, expected):
    assert decode_plain(b64(raw)) == expected
    assert decode_plain(b64(raw).decode() + "\r\n") == expected  # text or bytes, line end and all


@pytest.mark.parametrize(
    "response, error",
    [
        (b64(b"alice\x00pw"), "PLAIN needs authzid NUL authcid NUL password"),  # one NUL
        (b64(b"\x00alice\x00pw\x00"), "PLAIN needs"),  # three
        (b64(b"no-nuls-here"), "PLAIN needs"),
        (b"=", "PLAIN needs"),  # the empty response
        (b64(b"\x00\x00pw"), "empty user name"),
        (b64(b"\x00alice\x00"), "empty password"),
        (b64(b"\x00al\xffice\x00pw"), "user name is not UTF-8"),
        (b64(b"\x00alice\x00p\xc3"), "password is not UTF-8"),
        (b64(b"\xff\x00alice\x00pw"), "authorization identity is not UTF-8"),
        (b64(b"\x00" + b"u" * (MAX_IDENTITY + 1) + b"\x00pw"), "user name too long"),
        (b64(b"\x00a\x00" + b"p" * (MAX_PASSWORD + 1)), "password too long"),
        (b"A" * 100_000, "response too long"),  # refused before decoding
        (b"!!notbase64", "not base64"),
        (b"AGFsaWNlAHB3", None),  # control: valid
        (b"AGFsaWNlAHB", "not base64"),  # bad padding
        (b"AGFs aWNlAHB3", "not base64"),  # a space inside
    ],
)
def test_plain_refuses(response, error):
    if error is None:
        assert decode_plain(response) == ("alice", "pw")
        return
    with pytest.raises(SaslError, match=error):
        decode_plain(response)


@pytest.mark.parametrize("raw", [b"bob\x00alice\x00pw", b"alice@example.tes\x00alice@example.test\x00pw"])
def test_plain_refuses_to_act_as_another_user(raw):
    with pytest.raises(AuthzidRefused):
        decode_plain(b64(raw))


def test_login_steps():
    assert decode_login(b64(b"alice@example.test")) == "alice@example.test"
    assert decode_login(b64("pässwort".encode()), "password") == "pässwort"
    assert decode_login("=") == ""
    with pytest.raises(SaslError, match="NUL in the user name"):
        decode_login(b64(b"alice\x00"))
    with pytest.raises(SaslError, match="password too long"):
        decode_login(b64(b"p" * (MAX_PASSWORD + 1)), "password")
    with pytest.raises(SaslError, match="not base64"):
        decode_login("VXNlcm5hbWU6=")
    assert decode_base64(b" VXNlcm5hbWU6\r\n") == b"Username:"


@given(st.binary(max_size=300))
def test_any_response_decodes_or_raises_sasl_error(raw):
    for response in (raw, b64(raw)):
        try:
            user, password = decode_plain(response)
        except SaslError:
            continue
        assert user and password and "\x00" not in user + password
