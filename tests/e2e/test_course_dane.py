"""Issue 15 item 4 in the course scenario: DANE (RFC 7672) between two Mailflow stacks.

naver's operator publishes the TLSA record `mailflow dns records naver.test` prints for its own
certificate (MAILFLOW_TLS_CERT; moved to the port naver's SMTP listens on here, since daum connects
there and not to 25). The test's DNS server plays a validating resolver for naver.test and other.test
(AD bit), and daum's resolver trusts it (MAILFLOW_RESOLVER_DNSSEC_TRUST_AD). Mail from A to Z is
delivered with the certificate matched; mail to other.test, whose MX (naver's SMTP again) publishes a
TLSA record of another key, stays deferred with a DANE reason and never reaches naver.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.e2e.course import USERS, imap_find, message, queue_show, start_course, submit
from tests.support import wait_for

A, A_PW = USERS["daum"]
Z, Z_PW = USERS["naver"]
Y = "y@other.test"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    es, c = start_course(tmp_path_factory, MAILFLOW_RESOLVER_DNSSEC_TRUST_AD="true")
    with es:
        n, port = c.naver, c.naver.ports.smtp
        n.cli("domain", "add", "other.test")
        n.cli("user", "add", Y, "--password", "y-pw")
        printed = n.cli("dns", "records", "naver.test").stdout
        (tlsa,) = [line for line in printed.splitlines() if "\tTLSA\t" in line]
        assert tlsa.startswith("_25._tcp.mx.naver.test.\t")
        c.dns.add(tlsa.replace("_25._tcp.", f"_{port}._tcp.", 1))
        c.dns.add(f"""
other.test.               60 IN MX 10 mx.other.test.
mx.other.test.            60 IN A  127.0.0.3
_{port}._tcp.mx.other.test. 60 IN TLSA 3 1 1 {"5a" * 32}
""")
        c.dns.signed = {"naver.test", "other.test"}
        yield c


def test_a_tlsa_record_as_printed_lets_mail_through_authenticated(course):
    subject = f"dane pass {uuid.uuid4().hex[:8]}"
    submit(course.daum, A, A_PW, [Z], message(Z, subject))
    wait_for(lambda: imap_find(course.naver, Z, Z_PW, subject), timeout=30, what="Z has it")
    assert dane_results(course.daum).get("success", 0) >= 1  # matched, not merely opportunistic


def dane_results(st) -> dict[str, float]:
    """daum's delivery's mailflow_delivery_dane_total, by result."""
    text = httpx.get(st.http_url("delivery") + "/metrics", timeout=10).text
    found = re.findall(r'^mailflow_delivery_dane_total\{result="([a-z-]+)"\} ([0-9.e+]+)$', text, re.M)
    return {result: float(n) for result, n in found}


def test_a_certificate_matching_no_tlsa_record_is_deferred_not_sent(course):
    subject = f"dane mismatch {uuid.uuid4().hex[:8]}"
    qid = submit(course.daum, A, A_PW, [Y], message(Y, subject))

    def deferred():
        m = queue_show(course.daum, qid)
        return m and m["recipients"][0]["state"] == "deferred" and m["recipients"][0]

    r = wait_for(deferred, timeout=30, what="deferred by DANE")
    assert r["last_status"] == "4.7.5"
    assert "DANE: the certificate of mx.other.test matches none of its TLSA records" in r["last_error"]
    assert not imap_find(course.naver, Y, "y-pw", subject)
    assert dane_results(course.daum).get("validation-failure", 0) >= 1
