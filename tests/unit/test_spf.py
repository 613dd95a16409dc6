"""SPF (RFC 7208) against a table of DNS answers: the RFC's own examples (Appendix A, the macro examples
of §7.4), each limit of §4.6.4, each error class, explanations, and the record syntax."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.authn.spf import (
    MAX_EXPLANATION,
    Evaluation,
    PermError,
    check,
    check_host,
    parse_macro_string,
    parse_record,
)
from mailflow.contracts.messages import DnsAnswer

NOW = 1_700_000_000.0


class Zone:
    """A `DnsLookup` from lines "name TYPE value" (a TXT value is the rest of the line). Names with
    no records at all are NXDOMAIN, names with records of other types NODATA, names in `fail` are
    temp_fail; every question is kept in `asked`."""

    def __init__(self, text: str, fail: tuple[str, ...] = ()):
        self.records: dict[tuple[str, str], list[str]] = {}
        for line in text.strip().splitlines():
            if line.strip():
                name, rdtype, value = line.split(None, 2)
                self.records.setdefault((name.lower(), rdtype), []).append(value)
        self.fail = set(fail)
        self.asked: list[tuple[str, str]] = []

    def add(self, text: str) -> Zone:
        for key, values in Zone(text).records.items():
            self.records.setdefault(key, []).extend(values)
        return self

    async def query(self, name: str, rdtype) -> DnsAnswer:
        self.asked.append((name, rdtype))
        if name in self.fail:
            return DnsAnswer(name=name, type=rdtype, status="temp_fail", error="SERVFAIL")
        if records := self.records.get((name, rdtype)):
            return DnsAnswer(name=name, type=rdtype, status="ok", records=records, ttl=300)
        status = "nodata" if any(n == name for n, _ in self.records) else "nxdomain"
        return DnsAnswer(name=name, type=rdtype, status=status, ttl=60)


# RFC 7208 Appendix A: "these examples are based on the following DNS setup" (www's CNAME resolved)
APPENDIX_A = """
example.com               MX   10 mail-a.example.com
example.com               MX   20 mail-b.example.com
example.com               A    192.0.2.10
example.com               A    192.0.2.11
amy.example.com           A    192.0.2.65
bob.example.com           A    192.0.2.66
mail-a.example.com        A    192.0.2.129
mail-b.example.com        A    192.0.2.130
www.example.com           A    192.0.2.10
www.example.com           A    192.0.2.11
example.org               MX   10 mail-c.example.org
mail-c.example.org        A    192.0.2.140
10.2.0.192.in-addr.arpa   PTR  example.com
11.2.0.192.in-addr.arpa   PTR  example.com
65.2.0.192.in-addr.arpa   PTR  amy.example.com
66.2.0.192.in-addr.arpa   PTR  bob.example.com
129.2.0.192.in-addr.arpa  PTR  mail-a.example.com
130.2.0.192.in-addr.arpa  PTR  mail-b.example.com
140.2.0.192.in-addr.arpa  PTR  mail-c.example.org
4.0.0.10.in-addr.arpa     PTR  bob.example.com
"""
CLIENTS = ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130", "192.0.2.131",
           "192.0.2.140", "192.0.2.141", "10.0.0.4"]  # fmt: skip


async def spf(zone: Zone, ip: str, domain: str = "example.com", sender: str = "", **kw):
    return await check_host(zone, ip, domain, sender or f"joe@{domain}", "mx.sender.test", "mx.ours.test", now=NOW, **kw)


@pytest.mark.parametrize(
    "record,passing",
    [  # A.1 Simple Examples: the record of example.com, and the clients it lets send
        ("v=spf1 +all", CLIENTS),
        ("v=spf1 a -all", ["192.0.2.10", "192.0.2.11"]),
        ("v=spf1 a:example.org -all", []),  # example.org has no A records
        ("v=spf1 mx -all", ["192.0.2.129", "192.0.2.130"]),
        ("v=spf1 mx:example.org -all", ["192.0.2.140"]),
        ("v=spf1 mx mx:example.org -all", ["192.0.2.129", "192.0.2.130", "192.0.2.140"]),
        ("v=spf1 mx/30 mx:example.org/30 -all", ["192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.141"]),
        ("v=spf1 ptr -all", ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130"]),
        ("v=spf1 ip4:192.0.2.128/28 -all", ["192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.141"]),
    ],
)
async def test_appendix_a1_simple_examples(record, passing):
    zone = Zone(APPENDIX_A).add(f"example.com TXT {record}")
    results = {ip: (await spf(zone, ip)).result for ip in CLIENTS}
    assert results == {ip: "pass" if ip in passing else "fail" for ip in CLIENTS}


@pytest.mark.parametrize(
    "domain,ip,result",
    [  # A.2 Multiple Domain Example
        ("example.org", "192.0.2.10", "pass"),
        ("example.org", "192.0.2.20", "pass"),
        ("example.org", "192.0.2.30", "fail"),
        ("la.example.org", "192.0.2.10", "pass"),
        ("la.example.org", "192.0.2.30", "fail"),
    ],
)
async def test_appendix_a2_multiple_domains(domain, ip, result):
    zone = Zone("""
        example.org     TXT v=spf1 include:example.com include:example.net -all
        la.example.org  TXT v=spf1 redirect=example.org
        example.com     TXT v=spf1 ip4:192.0.2.10 -all
        example.net     TXT v=spf1 ip4:192.0.2.20 -all
    """)
    assert (await spf(zone, ip, domain)).result == result


@pytest.mark.parametrize(
    "ip,local,result",
    [  # A.3 DNSBL Style Example
        ("1.2.3.4", "mary", "pass"),
        ("1.2.3.4", "fred", "pass"),
        ("1.2.3.4", "fred+wildcard", "pass"),  # %{l1r+}: "fred"
        ("1.2.3.4", "joel", "fail"),
        ("192.168.15.15", "joel", "pass"),
        ("192.168.15.16", "joel", "pass"),
        ("192.168.15.17", "joel", "fail"),
        ("192.0.2.129", "anyone", "pass"),  # the mx
    ],
)
async def test_appendix_a3_dnsbl_style(ip, local, result):
    zone = Zone(APPENDIX_A).add("""
        example.com                    TXT v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all
        mobile-users._spf.example.com  TXT v=spf1 exists:%{l1r+}.%{d}
        remote-users._spf.example.com  TXT v=spf1 exists:%{ir}.%{l1r+}.%{d}
        mary.mobile-users._spf.example.com                A 127.0.0.2
        fred.mobile-users._spf.example.com                A 127.0.0.2
        15.15.168.192.joel.remote-users._spf.example.com  A 127.0.0.2
        16.15.168.192.joel.remote-users._spf.example.com  A 127.0.0.2
    """)
    assert (await spf(zone, ip, sender=f"{local}@example.com")).result == result


@pytest.mark.parametrize(
    "ip,result",
    [  # A.4 Multiple Requirements Example (with erratum 6216: -ptr:example.com)
        ("192.0.2.65", "pass"),  # in 192.0.2.0/24 and its PTR name validates in example.com
        ("192.0.2.140", "fail"),  # in the range, but mail-c.example.org
        ("192.0.2.1", "fail"),  # in the range, no PTR
        ("10.0.0.4", "fail"),  # outside the range
    ],
)
async def test_appendix_a4_multiple_requirements(ip, result):
    zone = Zone(APPENDIX_A).add("""
        example.com           TXT v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all
        ip4._spf.example.com  TXT v=spf1 -ip4:192.0.2.0/24 +all
        ptr._spf.example.com  TXT v=spf1 -ptr:example.com +all
    """)
    assert (await spf(zone, ip)).result == result


def evaluation(ip: str, sender: str = "strong-bad@email.example.com") -> Evaluation:
    local, _, domain = sender.rpartition("@")
    return Evaluation(Zone(APPENDIX_A), ipaddress.ip_address(ip), local, domain, "mx.sender.test", "mx.ours.test", NOW)


@pytest.mark.parametrize(
    "macro,expansion",
    [  # §7.4, exactly: <sender> strong-bad@email.example.com, IPv4 client 192.0.2.3
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        # and the rest of §7: escapes, URL-escaping of upper-case letters, h, several delimiters
        ("a%%b%_c%-d", "a%b c%20d"),
        ("%{S}", "strong-bad%40email.example.com"),
        ("%{h}", "mx.sender.test"),
        ("%{l1-.}", "bad"),
        ("%{d99}", "email.example.com"),
    ],
)
async def test_macro_examples_of_section_7_4(macro, expansion):
    c = evaluation("192.0.2.3")
    assert await c._expand(parse_macro_string(macro, exp=False), "email.example.com") == expansion


async def test_macro_example_of_section_7_4_in_ipv6():
    c = evaluation("2001:db8::cb01")
    got = await c._expand(parse_macro_string("%{ir}.%{v}._spf.%{d2}", exp=False), "email.example.com")
    assert got == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"


@pytest.mark.parametrize(
    "ip,domain,p",
    [
        ("192.0.2.65", "example.com", "amy.example.com"),  # a validated subdomain of the domain
        ("192.0.2.140", "example.com", "mail-c.example.org"),  # validated, in another domain
        ("10.0.0.4", "example.com", "unknown"),  # its PTR name does not point back
        ("192.0.2.1", "example.com", "unknown"),  # no PTR
    ],
)
async def test_the_p_macro_is_the_validated_name(ip, domain, p):
    assert await evaluation(ip)._expand(parse_macro_string("%{p}", exp=False), domain) == p


async def test_explanation_macros_c_r_t():
    c = evaluation("2001:db8::cb01")
    text = await c._expand(parse_macro_string("%{c} is not %{r}'s at %{t}", exp=True), "example.com")
    assert text == "2001:db8::cb01 is not mx.ours.test's at 1700000000"


# --- the limits of §4.6.4 --------------------------------------------------------------------------


def chain_of_a(n: int) -> str:
    """A record with n a: terms, each naming a host that exists but is not the client."""
    return "\n".join([f"limits.test TXT v=spf1 {' '.join(f'a:h{i}.limits.test' for i in range(n))} ip4:192.0.2.1 -all"]
                     + [f"h{i}.limits.test A 198.51.100.{i}" for i in range(n)])  # fmt: skip


async def test_ten_dns_terms_are_allowed_the_eleventh_is_a_permerror():
    assert (await spf(Zone(chain_of_a(10)), "192.0.2.1", "limits.test")).result == "pass"
    zone = Zone(chain_of_a(11))
    result = await spf(zone, "192.0.2.1", "limits.test")
    assert result.result == "permerror"
    assert result.reason == "more than 10 DNS-querying terms, at a:h10.limits.test in limits.test"
    assert ("h10.limits.test", "A") not in zone.asked  # the eleventh is never asked


async def test_terms_are_counted_across_includes_and_redirects():
    zone = Zone("""
        top.test  TXT v=spf1 a:h.test a:h.test a:h.test include:mid.test -all
        mid.test  TXT v=spf1 a:h.test a:h.test a:h.test redirect=end.test
        end.test  TXT v=spf1 a:h.test a:h.test ip4:192.0.2.1 -all
        h.test    A   198.51.100.1
    """)
    assert (await spf(zone, "192.0.2.1", "top.test")).result == "pass"  # 3 + 1 + 3 + 1 + 2 = 10
    zone.records[("end.test", "TXT")] = ["v=spf1 a:h.test a:h.test a:h.test ip4:192.0.2.1 -all"]
    assert (await spf(zone, "192.0.2.1", "top.test")).result == "permerror"  # 11


@pytest.mark.parametrize(
    "records,loop",
    [
        (["loop.test TXT v=spf1 include:loop.test -all"], "loop.test -> loop.test"),
        (["a.test TXT v=spf1 include:b.test -all", "b.test TXT v=spf1 include:a.test -all"], "a.test -> b.test -> a.test"),
        (["a.test TXT v=spf1 redirect=b.test", "b.test TXT v=spf1 redirect=a.test"], "a.test -> b.test -> a.test"),
        (["a.test TXT v=spf1 ip4:10.0.0.1 redirect=%{d}"], "a.test -> a.test"),
    ],
)
async def test_include_and_redirect_loops_end_at_the_limit_and_say_so(records, loop):
    domain = records[0].split()[0]
    result = await spf(Zone("\n".join(records)), "192.0.2.1", domain)
    assert result.result == "permerror"
    assert result.reason.startswith("more than 10 DNS-querying terms") and result.reason.endswith(f"loop: {loop}")


async def test_two_void_lookups_are_allowed_the_third_is_a_permerror():
    zone = Zone("void.test TXT v=spf1 a:none1.test mx:none2.test ip4:192.0.2.1 -all")
    assert (await spf(zone, "192.0.2.1", "void.test")).result == "pass"
    zone = Zone("void.test TXT v=spf1 a:none1.test exists:none2.test ptr ip4:192.0.2.1 -all")
    result = await spf(zone, "192.0.2.1", "void.test")
    assert (result.result, result.reason) == ("permerror", "more than 2 void lookups, at ptr in void.test")


def mx_hosts(n: int, client_is: int) -> str:
    lines = ["mx.test TXT v=spf1 mx -all"]
    for i in range(n):
        lines += [f"mx.test MX {i} mx{i}.mx.test", f"mx{i}.mx.test A 192.0.2.{100 + i}"]
    return "\n".join(lines)


async def test_an_mx_with_more_than_ten_names_is_a_permerror():
    assert (await spf(Zone(mx_hosts(10, 9)), "192.0.2.109", "mx.test")).result == "pass"
    result = await spf(Zone(mx_hosts(11, 0)), "192.0.2.100", "mx.test")
    assert (result.result, result.reason) == ("permerror", "mx.test: mx: 11 MX names, more than 10")


def ptr_names(n: int) -> str:
    lines = ["ptr.test TXT v=spf1 ptr -all"]
    for i in range(n):
        lines += [f"1.2.0.192.in-addr.arpa PTR h{i}.elsewhere.test", f"h{i}.elsewhere.test A 192.0.2.99"]
    lines[-1] = f"h{n - 1}.ptr.test A 192.0.2.1"  # only the last name is ours and points back
    lines[-2] = f"1.2.0.192.in-addr.arpa PTR h{n - 1}.ptr.test"
    return "\n".join(lines)


async def test_only_the_first_ten_ptr_names_are_used():
    assert (await spf(Zone(ptr_names(10)), "192.0.2.1", "ptr.test")).result == "pass"
    zone = Zone(ptr_names(11))
    assert (await spf(zone, "192.0.2.1", "ptr.test")).result == "fail"  # the 11th is ignored, no error
    assert ("h10.ptr.test", "A") not in zone.asked


# --- record selection (§4.5), errors, results ------------------------------------------------------


@pytest.mark.parametrize(
    "txt,result",
    [
        ([], "none"),
        (["google-site-verification=abc"], "none"),
        (["v=spf10 -all"], "none"),  # "v=spf1" must be followed by a space or the end
        (["v=spf1-all"], "none"),
        (["V=SPF1 -all"], "fail"),  # any case
        (["v=spf1"], "neutral"),  # no mechanism: §4.7
        (["v=spf1   -all   "], "fail"),
        (["v=spf1 -all", "v=spf10 +all", "other"], "fail"),
        (["v=spf1 -all", "v=spf1 +all"], "permerror"),  # two SPF records
    ],
)
async def test_record_selection(txt, result):
    zone = Zone("\n".join(f"sel.test TXT {t}" for t in txt) or "other.test A 192.0.2.9")
    assert (await spf(zone, "192.0.2.1", "sel.test")).result == result


@pytest.mark.parametrize("domain", ["localhost", "[192.0.2.1]", "192.0.2.1", "a..b.test", "", "x" * 64 + ".test"])
async def test_a_domain_that_cannot_have_a_record_is_none_without_asking(domain):
    zone = Zone("")
    result = await spf(zone, "192.0.2.1", domain)
    assert result.result == "none" and "not a domain name" in result.reason and zone.asked == []


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 foo",
        "v=spf1 -all:x",
        "v=spf1 all/24",
        "v=spf1 include",
        "v=spf1 include:",
        "v=spf1 exists",
        "v=spf1 ip4",
        "v=spf1 ip4:192.0.2",
        "v=spf1 ip4:192.0.2.01",
        "v=spf1 ip4:192.0.2.1/33",
        "v=spf1 ip4:192.0.2.1/024",
        "v=spf1 ip4:192.0.2.1/",
        "v=spf1 ip4:192.0.2.1/" + "1" * 5000,  # more digits than Python's int() takes
        "v=spf1 ip6:2001:db8::/129",
        "v=spf1 ip6:fe80::1%eth0",
        "v=spf1 ip6:192.0.2.1",
        "v=spf1 a/33",
        "v=spf1 a//129",
        "v=spf1 a:",
        "v=spf1 a:/24",
        "v=spf1 a:foo",  # not "." toplabel
        "v=spf1 a:example.123",  # an all-numeric top label
        "v=spf1 a:example.com-",
        "v=spf1 mx:%{x}.example.com",  # no such macro letter
        "v=spf1 exists:%{c}.example.com",  # c, r, t only in an explanation
        "v=spf1 a:%{d0}.example.com",  # keep zero parts
        "v=spf1 a:%{d}%",
        "v=spf1 a:%{d",
        "v=spf1 a:%{d2r!}.example.com",  # not a delimiter
        "v=spf1 ptr:",
        "v=spf1 ptr/24",
        "v=spf1 +redirect=example.com",  # modifiers have no qualifier
        "v=spf1 redirect=a.example.com redirect=b.example.com",
        "v=spf1 exp=a.example.com exp=b.example.com",
        "v=spf1 redirect=",
        "v=spf1 unknown=%{",  # an unknown modifier is ignored, but must be a macro-string
        "v=spf1 +all é",
        "v=spf1 +all\t-all",
        "v=spf1 +all foo",  # after a mechanism that would match: the whole record is read first
    ],
)
async def test_syntax_errors_are_permerror(record):
    result = await spf(Zone(f"bad.test TXT {record}"), "192.0.2.1", "bad.test")
    assert result.result == "permerror" and result.reason.startswith("bad.test: ")


@pytest.mark.parametrize(
    "record,result",
    [
        ("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.1 -all", "pass"),  # unknown modifiers are ignored
        ("v=spf1 x-note=%{c}%{r}%{t} ip4:192.0.2.1 -all", "pass"),
        ("v=spf1 a:%{d} -all", "fail"),  # a domain-spec may end in a macro
        ("v=spf1 a:example.com. -all", "fail"),  # and in a dot
        ("v=spf1 ip4:192.0.2.0/24 ip4:0.0.0.0/0 -all", "pass"),
        ("v=spf1 ?ip4:192.0.2.1 -all", "neutral"),
        ("v=spf1 ~ip4:192.0.2.1 -all", "softfail"),
        ("v=spf1 -ip4:192.0.2.1 +all", "fail"),
        ("v=spf1 ip6:::/0 ~all", "softfail"),  # an ip6 term never matches an IPv4 client
        ("v=spf1 -all redirect=other.test", "fail"),  # redirect is ignored when there is an all
        ("v=spf1 redirect=other.test", "pass"),
        ("v=spf1 IP4:192.0.2.1 -ALL", "pass"),  # names in any case
        ("v=spf1 exists:%{i}.allow.test -all", "pass"),
        ("v=spf1 a:%{h} -all", "pass"),  # mx.sender.test
    ],
)
async def test_results(record, result):
    zone = Zone(f"""
        ok.test                   TXT v=spf1 {record.removeprefix("v=spf1 ")}
        other.test                TXT v=spf1 ip4:192.0.2.1 -all
        192.0.2.1.allow.test      A   127.0.0.2
        mx.sender.test            A   192.0.2.1
    """)
    assert (await spf(zone, "192.0.2.1", "ok.test")).result == result


@pytest.mark.parametrize(
    "record,failing,result",
    [
        ("v=spf1 -all", "temp.test", "temperror"),  # the record itself
        ("v=spf1 a:h.temp.test -all", "h.temp.test", "temperror"),
        ("v=spf1 mx:m.temp.test -all", "m.temp.test", "temperror"),
        ("v=spf1 mx -all", "mx1.temp.test", "temperror"),  # an MX host's address
        ("v=spf1 exists:e.temp.test -all", "e.temp.test", "temperror"),
        ("v=spf1 include:i.temp.test -all", "i.temp.test", "temperror"),
        ("v=spf1 redirect=r.temp.test", "r.temp.test", "temperror"),
        ("v=spf1 ptr -all", "1.2.0.192.in-addr.arpa", "fail"),  # §5.5: a ptr whose lookup fails does not match
        ("v=spf1 -all exp=x.temp.test", "x.temp.test", "fail"),  # no explanation, the same result
    ],
)
async def test_dns_failures_are_temperror(record, failing, result):
    zone = Zone(f"""
        temp.test      TXT v=spf1 {record.removeprefix("v=spf1 ")}
        temp.test      MX  10 mx1.temp.test
        mx1.temp.test  A   192.0.2.9
    """, fail=(failing,))  # fmt: skip
    got = await spf(zone, "192.0.2.1", "temp.test")
    assert got.result == result
    if result == "temperror":
        assert "DNS: SERVFAIL" in got.reason


@pytest.mark.parametrize(
    "inner,result",
    [
        ("v=spf1 +all", "pass"),
        ("v=spf1 -all", "fail"),  # an include that fails does not match: on to -all
        ("v=spf1 ~all", "fail"),
        ("v=spf1 ?all", "fail"),
        (None, "permerror"),  # no record there
        ("v=spf1 foo", "permerror"),
    ],
)
async def test_include_results(inner, result):
    zone = Zone("outer.test TXT v=spf1 include:inner.test -all\nouter.test A 192.0.2.9")
    if inner:
        zone.add(f"inner.test TXT {inner}")
    assert (await spf(zone, "192.0.2.1", "outer.test")).result == result


async def test_a_redirect_to_a_domain_without_a_record_is_a_permerror():
    result = await spf(Zone("r.test TXT v=spf1 redirect=nowhere.test"), "192.0.2.1", "r.test")
    assert (result.result, result.reason) == ("permerror", "r.test: redirect=nowhere.test has no SPF record")


async def test_reasons_say_what_matched_where():
    zone = Zone("""
        example.com       TXT v=spf1 include:_spf.example.net -all
        _spf.example.net  TXT v=spf1 ip4:192.0.2.0/24 -all
    """)
    assert (await spf(zone, "192.0.2.1")).reason == (
        "example.com: 192.0.2.1 matched ip4:192.0.2.0/24 in _spf.example.net, by include:_spf.example.net in example.com"
    )
    assert (await spf(zone, "198.51.100.1")).reason == "example.com: 198.51.100.1 matched -all in example.com"
    odd = await spf(Zone("odd.test TXT v=spf1 foo(bar)\\baz"), "192.0.2.1", "odd.test")
    assert odd.reason == "odd.test: unknown mechanism foo[bar]/baz"  # fit for a header comment


# --- explanations (§6.2) ---------------------------------------------------------------------------


EXPLAINED = """
example.com           TXT v=spf1 ip4:192.0.2.10 -all exp=explain._spf.%{d}
explain._spf.example.com TXT %{i} is not one of %{d}'s designated mail servers.
two.test              TXT v=spf1 -all exp=two.explain.test
two.explain.test      TXT first
two.explain.test      TXT second
long.test             TXT v=spf1 -all exp=long.explain.test
long.explain.test     TXT See https://long.test/%{c}/ for why: {"x" * 1000}
soft.test             TXT v=spf1 ~all exp=explain._spf.example.com
outer.test            TXT v=spf1 include:inner.test -all exp=outer.explain.test
outer.explain.test    TXT from outer
inner.test            TXT v=spf1 -all exp=inner.explain.test
inner.explain.test    TXT from inner
redirect.test         TXT v=spf1 redirect=inner.test exp=outer.explain.test
badmacro.test         TXT v=spf1 -all exp=badmacro.explain.test
badmacro.explain.test TXT 100%{ sure
"""


@pytest.mark.parametrize(
    "domain,explanation",
    [
        ("example.com", "192.0.2.1 is not one of example.com's designated mail servers."),
        ("two.test", ""),  # two records: none
        ("long.test", ("See https://long.test/192.0.2.1/ for why: " + "x" * 1000)[:MAX_EXPLANATION]),
        ("soft.test", ""),  # only a fail is explained
        ("outer.test", "from outer"),  # an include's exp is never used
        ("redirect.test", "from inner"),  # a redirect's target's is, and never the original's
        ("badmacro.test", ""),
    ],
)
async def test_explanations(domain, explanation):
    zone = Zone(EXPLAINED.replace('{"x" * 1000}', "x" * 1000))
    result = await spf(zone, "192.0.2.1", domain)
    assert result.explanation == explanation and len(result.explanation) <= MAX_EXPLANATION
    assert ("inner.explain.test", "TXT") not in zone.asked or domain == "redirect.test"


# --- addresses, identities -------------------------------------------------------------------------


async def test_an_ipv4_mapped_ipv6_client_is_checked_as_ipv4():
    zone = Zone(APPENDIX_A).add("example.com TXT v=spf1 a exists:%{i}.%{v}.check.test -all")
    result = await spf(zone, "::ffff:192.0.2.10")
    assert result.result == "pass" and "192.0.2.10 matched a in example.com" in result.reason
    assert ("example.com", "A") in zone.asked and ("example.com", "AAAA") not in zone.asked


async def test_an_ipv6_client_is_compared_with_aaaa_records_and_ip6_networks():
    zone = Zone("""
        six.test       TXT  v=spf1 a//64 ip6:2001:db8:2::/48 -all
        six.test       A    192.0.2.1
        six.test       AAAA 2001:db8:1::1
    """)
    assert (await spf(zone, "2001:db8:1::ffff", "six.test")).result == "pass"  # the a's /64
    assert (await spf(zone, "2001:db8:2:3::1", "six.test")).result == "pass"
    assert (await spf(zone, "2001:db8:3::1", "six.test")).result == "fail"


async def test_check_asks_about_helo_and_mail_from():
    zone = Zone("""
        sender.test     TXT v=spf1 ip4:192.0.2.1 -all
        mx.sender.test  TXT v=spf1 a -all
        mx.sender.test  A   192.0.2.1
    """)
    helo, mail_from = await check(zone, "192.0.2.1", "alice@sender.test", "mx.sender.test", "mx.ours.test", now=NOW)
    assert (helo.identity, helo.domain, helo.result) == ("helo", "mx.sender.test", "pass")
    assert (mail_from.identity, mail_from.domain, mail_from.result) == ("mailfrom", "sender.test", "pass")


async def test_the_null_sender_is_postmaster_at_helo_asked_once():
    zone = Zone("mx.sender.test TXT v=spf1 exists:%{l}.%{o}.allow.test -all\npostmaster.mx.sender.test.allow.test A 127.0.0.2")
    helo, mail_from = await check(zone, "192.0.2.1", "", "mx.sender.test", now=NOW)
    assert helo.result == mail_from.result == "pass"
    assert (mail_from.identity, mail_from.domain) == ("mailfrom", "mx.sender.test")
    assert zone.asked.count(("mx.sender.test", "TXT")) == 1


async def test_a_helo_address_literal_is_none_and_mail_from_is_still_checked():
    zone = Zone("sender.test TXT v=spf1 ip4:192.0.2.1 -all")
    helo, mail_from = await check(zone, "192.0.2.1", "alice@sender.test", "[192.0.2.1]", now=NOW)
    assert helo.result == "none" and mail_from.result == "pass"


@given(st.text(max_size=300))
def test_any_record_text_parses_or_is_a_permerror(text):
    try:
        parse_record("v=spf1 " + text)
    except PermError:
        pass


async def test_macro_escapes_make_names_with_spaces_and_percents():
    zone = Zone("esc.test TXT v=spf1 a:macro%%percent%_space%-url.example.com -all")
    zone.records[("macro%percent space%20url.example.com", "A")] = ["192.0.2.1"]
    assert (await spf(zone, "192.0.2.1", "esc.test")).result == "pass"


@pytest.mark.parametrize(
    "spec,asked",
    [  # §7.3: a name over 253 characters loses labels on the left until it fits
        ("x." + ".".join(["a" * 62] * 4), "x." + ".".join(["a" * 62] * 4)),  # 253: fits
        ("xx." + ".".join(["a" * 62] * 4), ".".join(["a" * 62] * 4)),
        ("%{s}." * 5000 + "example.com", "test." + "postmaster@sender.test." * 10 + "example.com"),  # 120 KiB -> 246
    ],
    ids=["253", "254", "120KiB"],
)
async def test_long_names_are_cut_from_the_left(spec, asked):
    zone = Zone(f"long.test TXT v=spf1 exists:{spec} -all")
    await check_host(zone, "192.0.2.1", "long.test", "postmaster@sender.test", now=NOW)
    assert zone.asked[1] == (asked, "A") and len(asked) <= 253
