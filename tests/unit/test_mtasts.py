"""MTA-STS (RFC 8461) records and policies: the TXT record, the policy file, the mx matching rule of
§4.1, and what we publish; every bad input a PolicyError that says what is wrong, junk never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.mtasts import (
    MAX_AGE_LIMIT,
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    make,
    parse_policy,
    parse_txt,
)

# --- the TXT record (§3.1) ---------------------------------------------------------------------------

TXT = [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1; id=abc"], "abc"),
    (["v=STSv1;id=abc;  "], "abc"),
    (["v=STSv1; id=abc; ext_1=whatever"], "abc"),  # extensions are ignored
    (["v=spf1 -all", "v=STSv1; id=x1"], "x1"),  # other TXT records at the name are discarded
    ([], None),
    (["v=spf1 -all"], None),
    (["v=STSv10; id=x"], None),  # not "v=STSv1"
]


@pytest.mark.parametrize(("records", "want"), TXT)
def test_txt_record(records, want):
    assert parse_txt(records) == want


TXT_BAD = [
    (["v=STSv1; id=a", "v=STSv1; id=b"], "exactly one"),
    (["v=STSv1;"], "no id="),
    (["v=STSv1; id="], "not key=value"),
    (["v=STSv1; id=a-b"], "letters and digits"),
    (["v=STSv1; id=" + "a" * 33], "letters and digits"),
    (["v=STSv1; id=a; id=b"], "two id="),
    (["v=STSv1; junk"], "not key=value"),
    (["v=STSv1; id=a; b@d=1"], "malformed"),
]


@pytest.mark.parametrize(("records", "why"), TXT_BAD)
def test_txt_record_refused(records, why):
    with pytest.raises(PolicyError, match=why) as exc:
        parse_txt(records)
    assert exc.value.result == "sts-policy-invalid"


# --- the policy file (§3.2) ----------------------------------------------------------------------------

RFC_EXAMPLE = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"


def test_policy_of_the_rfc():
    p = parse_policy(RFC_EXAMPLE)
    assert p == Policy("enforce", ("mail.example.com", "*.example.net", "backupmx.example.com"), 604800)


def test_policy_lf_whitespace_unknown_keys_and_case():
    p = parse_policy(b"version: STSv1\nmode:testing\nmx:   MX1.Example.COM.  \nfuture_key: anything at all\nmax_age: 86400\n\n")
    assert p == Policy("testing", ("mx1.example.com",), 86400)


def test_mode_none_needs_no_mx():
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 60\n") == Policy("none", (), 60)


def test_max_age_is_capped_at_a_year():
    assert parse_policy(b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 9999999999\n").max_age == MAX_AGE_LIMIT


POLICY_BAD = [
    (b"mode: enforce\nmx: a.b\nmax_age: 1\n", "version '(missing)'"),
    (b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "must be STSv1"),
    (b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "mode 'strict'"),
    (b"version: STSv1\nmx: a.b\nmax_age: 1\n", "mode '(missing)'"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "needs at least one mx"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\n", "max_age '(missing)'"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "max_age '-1'"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n", "at most 10 digits"),
    (b"version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1\n", "mode given twice"),
    (b"version: STSv1\nthis line has no colon\n", "line 2 is not 'key: value'"),
    (b"version: STSv1\nmode:\n", "line 2 is not 'key: value'"),
    (b"version: STSv1\nmo de: enforce\n", "malformed key"),
    (b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmx: *.com\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmx: -a.b\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmx: m\xc3\xa4il.example\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\n\xff\n", "not UTF-8"),
    (b"version: STSv1\nmode: enforce\n" + b"mx: a.b\n" * 101 + b"max_age: 1\n", "more than 100 mx"),
    (b"x" * (MAX_POLICY_BYTES + 1), "at most 65536"),
]


@pytest.mark.parametrize(("body", "why"), POLICY_BAD)
def test_policy_refused(body, why):
    with pytest.raises(PolicyError, match=why.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        parse_policy(body)


@given(st.binary(max_size=2000))
def test_junk_is_a_policy_error_or_a_policy(data):
    try:
        parse_policy(data)
    except PolicyError:
        pass


@given(st.lists(st.text(max_size=80), max_size=4))
def test_junk_txt_is_a_policy_error_or_an_answer(records):
    try:
        parse_txt(records)
    except PolicyError:
        pass


def test_a_large_policy_is_parsed_in_linear_time():
    body = b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\n" + b"k: " + b"v" * (MAX_POLICY_BYTES - 100) + b"\n"
    assert parse_policy(body[:MAX_POLICY_BYTES]).mx == ("a.b",)


# --- matching (§4.1) -------------------------------------------------------------------------------------

MATCH = [
    ("mail.example.com", True),
    ("MAIL.Example.com.", True),
    ("mx1.example.net", True),  # *.example.net: one label
    ("example.net", False),  # the wildcard stands for one label, not none
    ("a.mx1.example.net", False),  # nor two
    ("mail.example.com.evil.test", False),
    ("other.example.com", False),
    ("backupmx.example.com", True),
]


@pytest.mark.parametrize(("host", "allowed"), MATCH)
def test_mx_matching(host, allowed):
    assert parse_policy(RFC_EXAMPLE).allows(host) is allowed


# --- what we publish -------------------------------------------------------------------------------------


def test_published_policy_round_trips_and_its_id_follows_its_content():
    p = make("enforce", ["mx.daum.test"], 604800)
    assert p.text() == "version: STSv1\r\nmode: enforce\r\nmx: mx.daum.test\r\nmax_age: 604800\r\n"
    assert parse_policy(p.text().encode()) == p
    assert p.id() == make("enforce", ["mx.daum.test"], 604800).id()
    assert p.id() != make("testing", ["mx.daum.test"], 604800).id()
    assert parse_txt([f"v=STSv1; id={p.id()}"]) == p.id()


@pytest.mark.parametrize(("mode", "mx", "age", "why"), [("strict", ["a.b"], 1, "mode"), ("enforce", [], 1, "at least one mx"), ("enforce", ["a.b"], MAX_AGE_LIMIT + 1, "max_age")])
def test_bad_settings_refused(mode, mx, age, why):
    with pytest.raises(PolicyError, match=why):
        make(mode, mx, age)
