"""DMARC (mailflow.authn.dmarc): From domains, record discovery and tags, alignment, pct, sp.

DNS is a table here (tests.support.dkim.TableDns, a fake of our own DnsLookup Protocol); the protocol
tests of smtp-ingress ask a DNS server the test starts."""

from __future__ import annotations

import asyncio

import pytest

from mailflow.authn import Dkim, Dmarc, Spf, dmarc
from tests.support.dkim import TEMP_FAIL, TableDns


def run(dns, from_header: str | list[str], spf=None, dkims=(), rng=lambda: 0.5) -> Dmarc:
    values = [from_header] if isinstance(from_header, str) else from_header
    spfs = [spf] if spf else []
    return asyncio.run(dmarc.check(dns, [v.encode() for v in values], spfs, list(dkims), rng))


def spf_pass(domain):
    return Spf("pass", "mailfrom", domain)


def dkim_pass(domain):
    return Dkim("pass", domain, "sel", "rsa-sha256", "abcdefgh")


REJECT = {"_dmarc.example.co.uk": ["v=DMARC1; p=reject"]}


@pytest.mark.parametrize(
    "name, org",
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own
        ("a.b.example.com", "example.com"),
        ("x.daum.test", "daum.test"),  # a TLD the list does not know: the default rule "*"
        ("Mail.Example.COM.", "example.com"),
        ("foo.blogspot.com", "foo.blogspot.com"),  # the list's private section counts too
    ],
)
def test_organizational_domain(name, org):
    assert dmarc.organizational_domain(name) == org


# --- alignment ---------------------------------------------------------------------------------------

ALIGNMENT = [
    # record, From domain, SPF (MAIL FROM) domain passing, DKIM d= passing, result
    ("v=DMARC1; p=reject", "example.co.uk", "example.co.uk", None, "pass"),
    ("v=DMARC1; p=reject", "example.co.uk", "bounce.example.co.uk", None, "pass"),  # relaxed
    ("v=DMARC1; p=reject; aspf=s", "example.co.uk", "bounce.example.co.uk", None, "fail"),
    ("v=DMARC1; p=reject", "example.co.uk", None, "mail.example.co.uk", "pass"),
    ("v=DMARC1; p=reject; adkim=s", "example.co.uk", None, "mail.example.co.uk", "fail"),
    ("v=DMARC1; p=reject; adkim=s", "example.co.uk", None, "EXAMPLE.co.uk", "pass"),
    ("v=DMARC1; p=reject", "example.co.uk", "other.co.uk", "other.co.uk", "fail"),  # same suffix is not aligned
    ("v=DMARC1; p=reject", "example.co.uk", None, None, "fail"),
]


@pytest.mark.parametrize("record, from_domain, spf_domain, dkim_domain, result", ALIGNMENT)
def test_alignment(record, from_domain, spf_domain, dkim_domain, result):
    dns = TableDns({f"_dmarc.{from_domain}": [record]})
    got = run(
        dns,
        f"Someone <a@{from_domain}>",
        spf_pass(spf_domain) if spf_domain else None,
        [dkim_pass(dkim_domain)] if dkim_domain else [],
    )
    assert got.result == result
    assert got.policy == ("none" if result == "pass" else "reject")
    assert got.published == "reject" and got.domain == from_domain


def test_only_passing_checks_align():
    dns = TableDns(REJECT)
    spf = Spf("softfail", "mailfrom", "example.co.uk")
    dkims = [Dkim("fail", "example.co.uk", "s", reason="body hash"), dkim_pass("elsewhere.test")]
    assert run(dns, "a@example.co.uk", spf, dkims).result == "fail"


def test_spf_of_the_helo_identity_is_not_used():
    dns = TableDns(REJECT)
    assert run(dns, "a@example.co.uk", Spf("pass", "helo", "example.co.uk")).result == "fail"


# --- discovery ---------------------------------------------------------------------------------------


def test_subdomain_without_record_uses_the_organizational_domains_sp():
    dns = TableDns({"_dmarc.example.co.uk": ["v=DMARC1; p=reject; sp=quarantine"]})
    got = run(dns, "a@mail.example.co.uk")
    assert dns.queries == ["_dmarc.mail.example.co.uk", "_dmarc.example.co.uk"]
    assert (got.result, got.policy, got.published) == ("fail", "quarantine", "quarantine")
    assert run(dns, "a@example.co.uk").policy == "reject"  # the org domain itself: p


def test_sp_defaults_to_p_and_a_record_at_the_subdomain_itself_uses_p():
    dns = TableDns(
        {
            "_dmarc.example.co.uk": ["v=DMARC1; p=reject"],
            "_dmarc.lists.example.co.uk": ["v=DMARC1; p=none; sp=reject"],
        }
    )
    assert run(dns, "a@mail.example.co.uk").policy == "reject"
    assert run(dns, "a@lists.example.co.uk").policy == "none"


@pytest.mark.parametrize(
    "records, result, policy",
    [
        ([], "none", "none"),
        (["v=spf1 -all", "some text"], "none", "none"),  # not DMARC records
        (["v=DMARC1; p=reject", "v=DMARC1; p=none"], "permerror", "none"),  # §6.6.3: two
        (["v=DMARC1; p=bogus"], "permerror", "none"),
        (["v=DMARC1"], "permerror", "none"),
        (["v=DMARC1; p=reject; sp=bogus"], "permerror", "none"),
        (["v=DMARC1; p=bogus; rua=mailto:d@example.co.uk"], "fail", "none"),  # with rua: as p=none
        (["v=dmarc1; p=reject"], "none", "none"),  # the version is case-sensitive
        (["V = DMARC1 ;P=Reject;"], "fail", "reject"),  # tag names and values are not
        (["p=reject; v=DMARC1"], "none", "none"),  # v= must come first
        (["v=DMARC1; p=reject; adkim=x; aspf=; pct=150; ri=-1; junk; =x"], "fail", "reject"),  # defaults
    ],
)
def test_records(records, result, policy):
    dns = TableDns({"_dmarc.example.co.uk": records} if records else {})
    got = run(dns, "a@example.co.uk")
    assert (got.result, got.policy) == (result, policy), got.reason


def test_report_tags_are_parsed_but_nothing_is_sent():
    rec = dmarc.parse_record(
        "v=DMARC1; p=none; rua=mailto:a@x.test!10m, bogus; ruf=mailto:f@x.test; fo=1:d; rf=afrf; ri=3600",
        "x.test",
        "x.test",
    )
    assert rec.rua == ("mailto:a@x.test!10m",) and rec.ruf == ("mailto:f@x.test",)
    assert (rec.fo, rec.rf, rec.ri) == ("1:d", "afrf", 3600)


def test_dns_failure_is_temperror_never_fail():
    dns = TableDns({"_dmarc.example.co.uk": TEMP_FAIL})
    got = run(dns, "a@mail.example.co.uk")
    assert (got.result, got.published) == ("temperror", None)
    assert run(TableDns({"_dmarc.mail.example.co.uk": TEMP_FAIL}), "a@mail.example.co.uk").result == "temperror"


def test_a_temporary_spf_or_dkim_error_turns_fail_into_temperror():
    dns = TableDns(REJECT)
    got = run(dns, "a@example.co.uk", Spf("temperror", "mailfrom", "example.co.uk"))
    assert (got.result, got.policy, got.published) == ("temperror", "none", "reject")
    got = run(dns, "a@example.co.uk", None, [Dkim("temperror", "example.co.uk", "s")])
    assert got.result == "temperror"
    assert run(dns, "a@example.co.uk", Spf("temperror", "mailfrom", "x.test"), [dkim_pass("example.co.uk")]).result == "pass"
    # one that could never have aligned changes nothing: a forger's signature of a domain DNS can't answer
    got = run(dns, "a@example.co.uk", Spf("temperror", "mailfrom", "x.test"), [Dkim("temperror", "unanswered.test", "s")])
    assert (got.result, got.policy) == ("fail", "reject")
    assert run(dns, "a@example.co.uk", None, [Dkim("temperror", reason="not done in time")]).result == "temperror"


# --- pct ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, rng, policy",
    [
        ("v=DMARC1; p=reject; pct=0", 0.0, "quarantine"),  # never sampled: the next policy down
        ("v=DMARC1; p=quarantine; pct=0", 0.0, "none"),
        ("v=DMARC1; p=reject; pct=100", 0.999, "reject"),
        ("v=DMARC1; p=reject; pct=50", 0.49, "reject"),
        ("v=DMARC1; p=reject; pct=50", 0.5, "quarantine"),
        ("v=DMARC1; p=none; pct=0", 0.9, "none"),
    ],
)
def test_pct_samples_with_the_given_random_source(record, rng, policy):
    got = run(TableDns({"_dmarc.example.co.uk": [record]}), "a@example.co.uk", rng=lambda: rng)
    assert got.policy == policy
    assert got.published == record.split("p=")[1].split(";")[0]


# --- the From field (§6.6.1) --------------------------------------------------------------------------


def test_no_single_from_domain():
    dns = TableDns(REJECT | {"_dmarc.other.test": ["v=DMARC1; p=quarantine"]})
    assert run(dns, []) == Dmarc("permerror", reason="no From field")
    assert run(dns, "undisclosed-recipients:;") == Dmarc("permerror", reason="no From address")
    assert run(dns, "a@[127.0.0.1]").result == "permerror"
    # two From domains: each is evaluated, the strictest counts
    both = run(dns, ["a@other.test", "b@example.co.uk"], dkims=[dkim_pass("other.test")])
    assert (both.result, both.domain, both.policy) == ("fail", "example.co.uk", "reject")
    assert run(dns, "a@example.co.uk, b@example.co.uk", dkims=[dkim_pass("example.co.uk")]).result == "pass"
    many = run(dns, ", ".join(f"a@d{i}.test" for i in range(dmarc.MAX_FROM_DOMAINS + 1)))
    assert (many.result, many.policy) == ("permerror", "reject")
    assert run(dns, ["a@example.co.uk"] * (dmarc.MAX_FROM_DOMAINS + 1)).policy == "reject"


def test_folded_and_international_from():
    dns = TableDns({"_dmarc.xn--bcher-kva.test": ["v=DMARC1; p=reject"]})
    got = run(dns, '"Ann\r\n Example" <ann@B\u00fccher.test>')
    assert (got.result, got.domain) == ("fail", "xn--bcher-kva.test")
