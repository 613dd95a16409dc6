"""Issue 14 §1-2 in the course scenario: daum.test signs what leaves for naver.test with DKIM.

daum's operator makes a key set (`mailflow dkim keygen`, `activate`), and the test's DNS server then
serves exactly what `mailflow dns records daum.test` prints. Mail that A submits (after AUTH) to Z
reaches naver with an RSA-SHA256 and an Ed25519-SHA256 signature, d=daum.test; OpenDKIM's
`opendkim-testmsg` (an independent verifier) checks each of them against those records, and dkimpy
checks them too; a changed body fails both. A DSN daum sends to a naver sender is signed; mail from a
domain of daum's without a key leaves unsigned; mail that reaches daum's MX unauthenticated and stays
there is never signed (as from daum.test itself, unsigned and from an address its SPF does not name, it
fails DMARC and lands in Junk: daum's records say p=quarantine).
"""

from __future__ import annotations

import smtplib
import uuid

import dkim as dkimpy
import pytest
from dnslib import RR

from tests.e2e.course import USERS, imap_find, message, start_course, submit
from tests.support import opendkim, wait_for

A, A_PW = USERS["daum"]
Z, Z_PW = USERS["naver"]
ALGORITHMS = (b"rsa-sha256", b"ed25519-sha256")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    es, c = start_course(tmp_path_factory, MAILFLOW_DELIVERY_DKIM_CACHE_S="1")
    with es:
        d = c.daum
        d.cli("dkim", "keygen", "daum.test", "--selector", "k1")
        d.cli("dkim", "activate", "daum.test", "k1")
        d.cli("domain", "add", "nokey.test")
        d.cli("user", "add", "b@nokey.test", "--password", "b-pw")
        d.cli("user", "add", "small@daum.test", "--password", "s-pw", "--quota", "10")
        zone = d.cli("dns", "records", "daum.test", "--dmarc", "reject").stdout
        c.dns.add(zone)  # the DNS serves what the operator was told to publish
        c.dns.add(d.cli("dns", "records", "nokey.test", "--dmarc", "quarantine").stdout)
        yield c, zone


def signatures(data: bytes) -> list[dict]:
    d = dkimpy.DKIM(data)
    return [dkimpy.util.parse_tag_value(v) for n, v in d.headers if n.lower() == b"dkim-signature"]


def dkimpy_verdicts(data: bytes, zone: str) -> list[bool]:
    """dkimpy's verdict on each signature, the keys taken from the zone-file lines."""
    txt = {str(rr.rname).encode(): b"".join(rr.rdata.data) for rr in RR.fromZone(zone) if "_domainkey" in str(rr.rname)}
    d, out = dkimpy.DKIM(data), []
    for i in range(len(signatures(data))):
        try:
            out.append(d.verify(idx=i, dnsfunc=lambda name, timeout=5: txt.get(name)))
        except dkimpy.ValidationError:
            out.append(False)
    return out


def assert_opendkim_verifies(data: bytes, zone: str) -> None:
    reason = opendkim.available()
    if reason:
        pytest.skip(reason)
    for algorithm in ALGORITHMS:
        alone = opendkim.only_signature(data, algorithm)
        assert [s[b"a"] for s in signatures(alone)] == [algorithm]
        assert opendkim.verify(alone, zone) == (0, ""), algorithm
    status, said = opendkim.verify(data.replace(b"Hello from", b"Hullo from"), zone)
    assert status != 0 and "signature" in said.lower(), said


def test_submitted_mail_leaves_signed_and_opendkim_verifies_it(course):
    c, zone = course
    subject = f"dkim signed {uuid.uuid4().hex[:8]}"
    submit(c.daum, A, A_PW, [Z], message(Z, subject))
    (got,) = wait_for(lambda: imap_find(c.naver, Z, Z_PW, subject), timeout=30, what="Z has it")
    sigs = signatures(got)
    assert [(s[b"a"], s[b"d"], s[b"s"]) for s in sigs] == [(b"rsa-sha256", b"daum.test", b"k1-rsa"), (b"ed25519-sha256", b"daum.test", b"k1-ed25519")]
    assert dkimpy_verdicts(got, zone) == [True, True]
    assert dkimpy_verdicts(got.replace(b"Hello from", b"Hullo from"), zone) == [False, False]
    assert_opendkim_verifies(got, zone)


def authentication_results(data: bytes) -> list[bytes]:
    """The values of the message's Authentication-Results fields, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"authentication-results:")]


def has(results: bytes, verdict: bytes, prop: bytes) -> int:
    """How many of the header's results say `verdict` (e.g. b"spf=pass") about `prop` (b"smtp.mailfrom=daum.test")."""
    return sum(1 for part in results.split(b"; ") if part.startswith(verdict + b" ") and prop in part.split(b" "))


def test_naver_verifies_daums_mail_spf_dkim_dmarc_pass(course):
    c, _ = course
    subject = f"trusted {uuid.uuid4().hex[:8]}"
    submit(c.daum, A, A_PW, [Z], message(Z, subject))
    (got,) = wait_for(lambda: imap_find(c.naver, Z, Z_PW, subject), timeout=30, what="Z has it")
    (results,) = authentication_results(got)
    assert results.startswith(b"mx.naver.test;"), results
    assert has(results, b"spf=pass", b"smtp.mailfrom=daum.test") == 1, results
    assert has(results, b"dkim=pass", b"header.d=daum.test") == 1, results  # RSA's settles daum.test (§6.1)
    assert has(results, b"dmarc=pass", b"header.from=daum.test") == 1, results


def test_a_forgery_in_daums_name_straight_to_navers_mx_is_refused(course):
    c, _ = course
    subject = f"forged reject {uuid.uuid4().hex[:8]}"
    with smtplib.SMTP(c.naver.ports.host, c.naver.ports.smtp, timeout=30) as s:  # from 127.0.0.1: not daum's MX
        s.ehlo("mx.daum.test")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail(A, [Z], message(Z, subject))
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.1"), refused.value
    assert imap_find(c.naver, Z, Z_PW, subject) == [] and imap_find(c.naver, Z, Z_PW, subject, "Junk") == []


def test_a_forgery_in_a_quarantine_domains_name_lands_in_junk(course):
    c, _ = course
    subject = f"forged quarantine {uuid.uuid4().hex[:8]}"
    with smtplib.SMTP(c.naver.ports.host, c.naver.ports.smtp, timeout=30) as s:
        s.sendmail("b@nokey.test", [Z], message(Z, subject, sender="b@nokey.test"))
    (got,) = wait_for(lambda: imap_find(c.naver, Z, Z_PW, subject, "Junk"), timeout=30, what="Z's Junk has it")
    (results,) = authentication_results(got)
    assert has(results, b"spf=fail", b"smtp.mailfrom=nokey.test") == 1, results
    assert has(results, b"dmarc=fail", b"header.from=nokey.test") == 1, results
    assert imap_find(c.naver, Z, Z_PW, subject) == []


def test_a_dsn_to_a_remote_sender_is_signed(course):
    c, zone = course
    subject = f"dkim dsn {uuid.uuid4().hex[:8]}"
    # Z's message fits no quota of small@daum.test: daum accepts it, bounces it and tells Z
    submit(c.naver, Z, Z_PW, ["small@daum.test"], message("small@daum.test", subject, sender=Z))
    (dsn,) = wait_for(lambda: [b for b in imap_find(c.naver, Z, Z_PW, subject) if b"MAILER-DAEMON@mx.daum.test" in b], timeout=60, what="the DSN at Z")
    assert [(s[b"a"], s[b"d"]) for s in signatures(dsn)] == [(b"rsa-sha256", b"daum.test"), (b"ed25519-sha256", b"daum.test")]
    assert dkimpy_verdicts(dsn, zone) == [True, True]
    reason = opendkim.available()
    if reason:
        pytest.skip(reason)
    for algorithm in ALGORITHMS:
        assert opendkim.verify(opendkim.only_signature(dsn, algorithm), zone) == (0, "")


def test_mail_from_a_domain_without_a_key_leaves_unsigned(course):
    c, _ = course
    subject = f"dkim nokey {uuid.uuid4().hex[:8]}"
    submit(c.daum, "b@nokey.test", "b-pw", [Z], message(Z, subject, sender="b@nokey.test"))
    (got,) = wait_for(lambda: imap_find(c.naver, Z, Z_PW, subject), timeout=30, what="Z has it")
    assert signatures(got) == []


def test_unauthenticated_inbound_mail_is_never_signed(course):
    c, _ = course
    subject = f"dkim inbound {uuid.uuid4().hex[:8]}"
    outsider = "someone@elsewhere.test"  # no records at all: spf=none dmarc=none, delivered
    with smtplib.SMTP(c.daum.ports.host, c.daum.ports.smtp, timeout=30) as s:  # daum's MX, no AUTH
        s.sendmail(outsider, [A], message(A, subject, sender=outsider))
    (got,) = wait_for(lambda: imap_find(c.daum, A, A_PW, subject), timeout=30, what="A has it")
    assert f"From: <{outsider}>".encode() in got and signatures(got) == []
    assert b"dmarc=none" in got
