"""checks.decide: the one place where authentication results become a reply, as a table; and the
pipeline's deadline and errors with checks that are our own fakes (the protocol tests run the real
ones against a DNS server)."""

from __future__ import annotations

import asyncio

import pytest

from mailflow.authn import Arc, Dkim, Dmarc, Spf
from mailflow_smtp_ingress.checks import Checks, Modes, Results, decide
from tests.support.dkim import TableDns

ENFORCE_ALL = Modes("enforce", "enforce", "enforce", "enforce")
DEFAULTS = Modes()


def spf(result, identity="mailfrom", explanation=""):
    return Spf(result, identity, "daum.test", explanation=explanation)


def dm(result, policy="none", published="reject"):
    return Dmarc(result, "daum.test", policy, published)


PASS = Results((spf("pass", "helo"), spf("pass")), (Dkim("pass", "daum.test"),), Arc("none"), dm("pass"))

TABLE = [
    # modes, results, (code, status, reason, junk)
    (DEFAULTS, PASS, (None, None, "", False)),
    (ENFORCE_ALL, PASS, (None, None, "", False)),
    (DEFAULTS, Results(dmarc=dm("fail", "reject")), (550, "5.7.1", "dmarc_reject", False)),
    (DEFAULTS, Results(dmarc=dm("fail", "quarantine")), (None, None, "dmarc_quarantine", True)),
    (DEFAULTS, Results(dmarc=dm("fail", "none", "none")), (None, None, "", False)),
    (DEFAULTS, Results(dmarc=dm("temperror", "none", None)), (451, "4.7.1", "dmarc_temperror", False)),
    (DEFAULTS, Results(dmarc=dm("temperror", "none", "quarantine")), (451, "4.7.1", "dmarc_temperror", False)),
    (DEFAULTS, Results(dmarc=dm("temperror", "none", "none")), (None, None, "", False)),  # p=none: nothing to wait for
    (DEFAULTS, Results(dmarc=Dmarc("permerror", reason="no From field")), (None, None, "", False)),
    (DEFAULTS, Results(dmarc=Dmarc("permerror", policy="reject", reason="more than 4 From domains")), (550, "5.7.1", "dmarc_reject", False)),
    (Modes(dmarc="report"), Results(dmarc=dm("fail", "reject")), (None, None, "", False)),
    # SPF
    (DEFAULTS, Results((spf("fail"),)), (None, None, "", False)),  # report only
    (Modes(spf="enforce"), Results((spf("pass", "helo"), spf("fail"))), (550, "5.7.23", "spf_fail", False)),
    (Modes(spf="enforce"), Results((spf("fail", "helo"), spf("pass"))), (550, "5.7.23", "spf_fail", False)),
    (Modes(spf="enforce"), Results((spf("softfail"), spf("permerror", "helo"))), (None, None, "", False)),
    (Modes(spf="enforce"), Results((spf("temperror"),)), (451, "4.7.24", "spf_temperror", False)),
    (Modes(spf="enforce"), Results((spf("temperror", "helo"), spf("fail"))), (550, "5.7.23", "spf_fail", False)),
    # DKIM: signed, none passes, one fails
    (Modes(dkim="enforce"), Results(dkim=()), (None, None, "", False)),  # unsigned
    (Modes(dkim="enforce"), Results(dkim=(Dkim("fail"), Dkim("pass"))), (None, None, "", False)),
    (Modes(dkim="enforce"), Results(dkim=(Dkim("fail"), Dkim("permerror"))), (550, "5.7.20", "dkim_fail", False)),
    (Modes(dkim="enforce"), Results(dkim=(Dkim("permerror"),)), (None, None, "", False)),  # RFC 6376 §6.3: as unsigned
    (Modes(dkim="enforce"), Results(dkim=(Dkim("fail"), Dkim("temperror"))), (451, "4.7.20", "dkim_temperror", False)),
    # ARC
    (Modes(arc="enforce"), Results(arc=Arc("fail", 2, "ARC-Seal i=2: signature did not verify")), (550, "5.7.29", "arc_fail", False)),
    (Modes(arc="enforce"), Results(arc=Arc("fail", 1, "ARC-Seal i=1: key unavailable (DNS)")), (451, "4.7.29", "arc_temperror", False)),
    # a permanent refusal wins over a temporary one; DMARC's first
    (ENFORCE_ALL, Results((spf("temperror"),), (Dkim("fail"),), None, dm("fail", "reject")), (550, "5.7.1", "dmarc_reject", False)),
    (ENFORCE_ALL, Results((spf("fail"),), (Dkim("temperror"),), None, dm("temperror")), (550, "5.7.23", "spf_fail", False)),
    (ENFORCE_ALL, Results((spf("temperror"),), (), None, dm("fail", "quarantine")), (451, "4.7.24", "spf_temperror", False)),
]


@pytest.mark.parametrize("modes, results, expected", TABLE)
def test_decide(modes, results, expected):
    v = decide(modes, results)
    got = (v.reply.code if v.reply else None, v.reply.status if v.reply else None, v.reason, v.junk)
    assert got == expected
    assert v.reply is None or v.reply.code in (451, 550)


def test_reply_texts_name_the_domain_and_its_explanation():
    v = decide(DEFAULTS, Results(dmarc=dm("fail", "reject")))
    assert str(v.reply) == "550 5.7.1 Rejected by the DMARC policy of the From domain (daum.test)"
    v = decide(Modes(spf="enforce"), Results((spf("fail", explanation="see https://daum.test/spf"),)))
    assert str(v.reply) == "550 5.7.23 SPF validation failed for MAIL FROM domain daum.test: see https://daum.test/spf"


# --- the pipeline, with fakes of our own check functions ----------------------------------------------


MESSAGE = b"From: a@daum.test\r\nAuthentication-Results: mx.naver.test; dmarc=pass\r\nSubject: x\r\n\r\nhi\r\n"


def checks(modes=DEFAULTS, spf_check=None, dkim_check=None, arc_check=None, dns=None) -> Checks:
    async def spf_ok(ip, mail_from, helo):
        return (spf("none", "helo"), spf("pass"))

    async def no_sigs(message, parsed):
        return ()

    async def no_arc(message, parsed):
        return Arc("none")

    return Checks(modes, "mx.naver.test", dns or TableDns({}), spf_check or spf_ok, dkim_check or no_sigs, arc_check or no_arc)


def test_a_check_past_the_deadline_is_a_temperror():
    async def slow(*args):
        await asyncio.sleep(30)

    c = checks(Modes(spf="enforce", timeout=0.05), spf_check=slow)
    v = asyncio.run(c.run("192.0.2.1", "mail.daum.test", "a@daum.test", MESSAGE))
    assert [(s.identity, s.result, s.reason) for s in v.results.spf] == [
        ("helo", "temperror", "not done in time"),
        ("mailfrom", "temperror", "not done in time"),
    ]
    assert (v.reply.code, v.reply.status) == (451, "4.7.24")
    assert v.results.dmarc.result == "none"  # the DMARC lookup itself finished


def test_a_check_that_raises_is_a_temperror_with_a_ref(caplog):
    async def broken(message, parsed):
        raise KeyError("bug")

    v = asyncio.run(checks(dkim_check=broken).run("192.0.2.1", "h.daum.test", "a@daum.test", MESSAGE))
    (d,) = v.results.dkim
    assert d.result == "temperror" and d.reason.startswith("internal error, ref ")
    assert v.reply is None  # DKIM only reports; DMARC finds no record here
    assert "dkim check failed" in caplog.text


def test_the_header_is_ours_and_forged_ones_go():
    v = asyncio.run(checks().run("192.0.2.1", "h.daum.test", "a@daum.test", MESSAGE))
    assert v.header.startswith(b"Authentication-Results: mx.naver.test;\r\n\tspf=none smtp.helo=daum.test;")
    assert b"dkim=none" in v.header and b"arc=none" in v.header and b"dmarc=none" in v.header
    assert v.message == b"From: a@daum.test\r\nSubject: x\r\n\r\nhi\r\n"


def test_checks_that_are_off_do_not_run():
    async def never(*args):
        raise AssertionError("ran")

    c = checks(Modes("off", "report", "off", "off"), spf_check=never, arc_check=never)
    v = asyncio.run(c.run("192.0.2.1", "h.daum.test", "a@daum.test", MESSAGE))
    assert v.results == Results(dkim=())
    assert v.header == b"Authentication-Results: mx.naver.test;\r\n\tdkim=none\r\n"



def test_an_spf_verdict_is_kept_for_the_same_client_sender_and_helo_but_a_temperror_never():
    from mailflow_smtp_ingress.settings import Settings
    from tests.support.dkim import TEMP_FAIL

    dns = TableDns({"daum.test": ["v=spf1 ip4:192.0.2.0/24 -all"], "h.daum.test": [], "late.test": TEMP_FAIL})
    c = Checks.over(Settings(service_token="t", hostname="mx.naver.test", check_dmarc="off"), dns)

    def spf_results(mail_from, ip="192.0.2.1"):
        v = asyncio.run(c.run(ip, "h.daum.test", mail_from, MESSAGE))
        return [s.result for s in v.results.spf]

    assert spf_results("a@daum.test") == ["none", "pass"]
    asked = len(dns.queries)
    assert spf_results("a@daum.test") == ["none", "pass"] and len(dns.queries) == asked  # kept: nothing asked
    assert spf_results("a@daum.test", ip="198.51.100.7") == ["none", "fail"] and len(dns.queries) > asked  # another client
    asked = len(dns.queries)
    assert spf_results("b@late.test")[1] == "temperror"
    assert spf_results("b@late.test")[1] == "temperror" and len(dns.queries) > asked + 1  # asked again
