"""mailflow.scram: SCRAM-SHA-256 (RFC 7677) over RFC 5802. The RFC 7677 §3 test vector end to end, RFC
5802 §5's messages through the grammar, a whole exchange against scramp (an independent client), and
hostile input: overlong, bad base64, bad escapes, a wrong nonce, a replayed final message, a bad proof,
another user's authorization identity, channel binding types and downgrades."""

from __future__ import annotations

import base64

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.sasl import AuthzidRefused, SaslError
from mailflow.scram import (
    MAX_MESSAGE,
    MECHANISM,
    MECHANISM_PLUS,
    ScramError,
    ServerExchange,
    Verifier,
    decode_saslname,
    fake_salt,
    parse_client_final,
    parse_client_first,
    saslprep,
    server_final,
)

# RFC 7677 §3
C_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
S_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
C_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
S_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def test_rfc7677_vector():
    v = Verifier.make("pencil", 4096, SALT)
    first, final = parse_client_first(C_FIRST), parse_client_final(C_FINAL)
    auth_message = b",".join((first.bare.encode(), S_FIRST, final.without_proof.encode()))
    assert v.check(auth_message, final.proof)
    assert server_final(v.signature(auth_message)) == S_FINAL
    assert not Verifier.make("pencil2", 4096, SALT).check(auth_message, final.proof)
    assert not v.check(auth_message + b"x", final.proof)
    assert not v.check(auth_message, final.proof[:-1])  # a proof of the wrong length


def test_verifier_round_trips_and_refuses_garbage():
    v = Verifier.make("pencil", 4096, SALT)
    assert Verifier.decode(v.encode()) == v
    assert v.encode().startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    for bad in ("", "SCRAM-SHA-1$4096:x$y:z", "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$AA==:AA==",
                v.encode()[:-4], "SCRAM-SHA-256$4096:!!$" + v.encode().split("$", 2)[2]):  # fmt: skip
        with pytest.raises(ValueError):
            Verifier.decode(bad)


def test_rfc5802_messages_parse():
    first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    assert (first.flag, first.cb_name, first.authzid, first.user) == ("n", None, "", "user")
    assert first.nonce == "fyko+d2lbbFgONRv9qkxdawL" and first.bare == "n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    assert first.gs2_header == "n,,"
    final = parse_client_final(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert final.channel_binding == b"n,," and final.nonce == "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
    assert final.without_proof == "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
    assert len(final.proof) == 20


@pytest.mark.parametrize(
    "raw, flag, cb, authzid, user",
    [
        (b"y,,n=user,r=abc", "y", None, "", "user"),
        (b"p=tls-server-end-point,,n=user,r=abc", "p", "tls-server-end-point", "", "user"),
        (b"n,a=User,n=user,r=abc", "n", None, "User", "user"),  # one's own name, as the store compares it
        (b"n,,n=a=2Cb=3Dc@example.test,r=abc", "n", None, "", "a,b=c@example.test"),
        (b"n,,n=user,r=abc,x=ignored", "n", None, "", "user"),  # an optional extension
        ("n,,n=usér,r=abc".encode(), "n", None, "", "usér"),
    ],
)
def test_client_first_table(raw, flag, cb, authzid, user):
    first = parse_client_first(raw)
    assert (first.flag, first.cb_name, first.authzid, first.user) == (flag, cb, authzid, user)


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"", "invalid-encoding"),
        (b"n,,n=user", "invalid-encoding"),  # no nonce
        (b"x,,n=user,r=abc", "invalid-encoding"),  # a bad gs2 flag
        (b"p=,,n=user,r=abc", "invalid-encoding"),
        (b"p=tls unique,,n=user,r=abc", "invalid-encoding"),
        (b"n,,m=ext,n=user,r=abc", "extensions-not-supported"),  # RFC 5802 §5.1: a mandatory extension
        (b"n,,n=us=2Xer,r=abc", "invalid-username-encoding"),
        (b"n,,n=user=,r=abc", "invalid-username-encoding"),
        (b"n,,n=,r=abc", "invalid-username-encoding"),
        (b"n,,n=user,r=", "invalid-encoding"),
        (b"n,,n=user,r=a\x7fb", "invalid-encoding"),
        (b"n,,n=user,r=abc,=x", "invalid-encoding"),
        (b"n,,n=\xff,r=abc", "invalid-encoding"),  # not UTF-8
        (b"n,,n=user,r=" + b"a" * 400, "other-error"),  # an overlong nonce
        (b"n,,n=" + b"u" * 400 + b",r=abc", "other-error"),
        (b"n,,n=user,r=abc," + b"x=" * MAX_MESSAGE, "other-error"),  # an overlong message
    ],
)
def test_client_first_refused(raw, code):
    with pytest.raises(ScramError) as e:
        parse_client_first(raw)
    assert e.value.code == code and str(e.value).startswith(f"e={code}: ")


def test_authzid_of_another_user_is_refused():
    with pytest.raises(AuthzidRefused):
        parse_client_first(b"n,a=boss@example.test,n=alice@example.test,r=abc")


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"c=biws,r=abc", "invalid-encoding"),  # no proof
        (b"c=biws,p=AAAA", "invalid-encoding"),
        (b"c=!!!!,r=abc,p=AAAA", "invalid-encoding"),  # bad base64
        (b"c=biw,r=abc,p=AAAA", "invalid-encoding"),  # unpadded
        (b"c=biws,r=abc,p=AA*A", "invalid-proof"),
        (b"r=abc,c=biws,p=AAAA", "invalid-encoding"),  # out of order
    ],
)
def test_client_final_refused(raw, code):
    with pytest.raises(ScramError) as e:
        parse_client_final(raw)
    assert e.value.code == code


@given(st.text(max_size=50))
def test_saslname_round_trips(name):
    assert decode_saslname(name.replace("=", "=3D").replace(",", "=2C")) == name


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_any_bytes_either_parse_or_raise_a_sasl_error(data):
    for parse in (parse_client_first, parse_client_final):
        try:
            parse(data)
        except SaslError:
            pass


def test_saslprep():
    assert saslprep("I\u00adX") == "IX"  # RFC 4013 §3 examples: soft hyphen mapped to nothing
    assert saslprep("user") == "user" and saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a" and saslprep("\u2168") == "IX"  # NFKC
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space mapped to space
    for bad in ("\u0007", "\u0627\u0031"):  # a control character; RandALCat first but not last
        with pytest.raises(ValueError):
            saslprep(bad)
    assert Verifier.make("I\u00adX", 4096, SALT) == Verifier.make("IX", 4096, SALT)


def test_fake_salt_is_stable_per_secret_and_name():
    assert fake_salt(b"k", "Nobody@example.test") == fake_salt(b"k", "nobody@example.test")
    assert fake_salt(b"k", "a@example.test") != fake_salt(b"k", "b@example.test")
    assert fake_salt(b"k", "a@example.test") != fake_salt(b"j", "a@example.test")
    assert len(fake_salt(b"k", "a@example.test")) == 16


# --- one exchange against scramp ---------------------------------------------------------------------------

BINDING = {"tls-server-end-point": b"\x01" * 32}


def run(client: scramp.ScramClient, server: ServerExchange, verifier: Verifier) -> bytes:
    """The whole exchange; returns the server-final message (which the client then checks)."""
    server.start(client.get_client_first().encode())
    client.set_server_first(server.challenge(verifier.salt, verifier.iterations).decode())
    auth_message, proof = server.finish(client.get_client_final().encode())
    if not verifier.check(auth_message, proof):
        raise AssertionError("proof refused")
    final = server_final(verifier.signature(auth_message))
    client.set_server_final(final.decode())  # raises unless the server proved itself
    return final


def test_exchange_with_scramp():
    v = Verifier.make("pencil", 4096)
    run(scramp.ScramClient([MECHANISM], "user", "pencil"), ServerExchange(MECHANISM, {}, False), v)


def test_exchange_plus_with_scramp():
    v = Verifier.make("pencil", 4096)
    client = scramp.ScramClient([MECHANISM_PLUS], "user", "pencil", ("tls-server-end-point", b"\x01" * 32))
    run(client, ServerExchange(MECHANISM_PLUS, BINDING, True), v)


def test_wrong_password_fails_the_proof():
    v = Verifier.make("pencil", 4096)
    with pytest.raises(AssertionError, match="proof refused"):
        run(scramp.ScramClient([MECHANISM], "user", "wrong"), ServerExchange(MECHANISM, {}, False), v)


def test_channel_binding_data_must_match():
    v = Verifier.make("pencil", 4096)
    client = scramp.ScramClient([MECHANISM_PLUS], "user", "pencil", ("tls-server-end-point", b"\x02" * 32))
    with pytest.raises(ScramError) as e:
        run(client, ServerExchange(MECHANISM_PLUS, BINDING, True), v)
    assert e.value.code == "channel-bindings-dont-match"


def test_binding_types_and_downgrades():
    with pytest.raises(ScramError) as e:
        ServerExchange(MECHANISM_PLUS, BINDING, True).start(b"p=tls-unique,,n=user,r=abc")
    assert e.value.code == "unsupported-channel-binding-type" and "tls-server-end-point" in str(e.value)
    with pytest.raises(ScramError) as e:  # RFC 5802 §6: -PLUS was offered, yet the client thinks not
        ServerExchange(MECHANISM, BINDING, True).start(b"y,,n=user,r=abc")
    assert e.value.code == "server-does-support-channel-binding"
    ServerExchange(MECHANISM, {}, False).start(b"y,,n=user,r=abc")  # no TLS: "y" is right
    with pytest.raises(ScramError):
        ServerExchange(MECHANISM_PLUS, BINDING, True).start(b"n,,n=user,r=abc")  # -PLUS without binding
    with pytest.raises(ScramError):
        ServerExchange(MECHANISM, BINDING, True).start(b"p=tls-server-end-point,,n=user,r=abc")


def test_gs2_header_must_come_back_unchanged():
    server = ServerExchange(MECHANISM, {}, False)
    server.start(b"y,,n=user,r=abc")
    nonce = server.challenge(SALT, 4096).decode().split(",")[0][2:]
    c = base64.b64encode(b"n,,").decode()  # "n" now, "y" before: a downgrade on the way
    with pytest.raises(ScramError) as e:
        server.finish(f"c={c},r={nonce},p=AAAA".encode())
    assert e.value.code == "channel-bindings-dont-match"


def test_wrong_nonce_and_replayed_final():
    server = ServerExchange(MECHANISM, {}, False)
    server.start(b"n,,n=user,r=abc")
    nonce = server.challenge(SALT, 4096).decode().split(",")[0][2:]
    assert nonce.startswith("abc") and len(nonce) > 20
    with pytest.raises(ScramError, match="nonce"):
        server.finish(b"c=biws,r=abcdef,p=AAAA")
    with pytest.raises(ScramError, match="already finished"):  # one final message per exchange
        server.finish(f"c=biws,r={nonce},p=AAAA".encode())
    other = ServerExchange(MECHANISM, {}, False)
    other.start(b"n,,n=user,r=abc")
    other.challenge(SALT, 4096)
    with pytest.raises(ScramError, match="nonce"):  # a final message of one exchange replayed in another
        other.finish(f"c=biws,r={nonce},p=AAAA".encode())
