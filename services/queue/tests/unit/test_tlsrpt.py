"""TLS-RPT's pure parts (RFC 8460): the `_smtp._tls` record, the JSON report (§4) and the mail (§5.3)."""

from __future__ import annotations

import base64
import email
import gzip
import json
from datetime import UTC, date, datetime

import pytest

from mailflow_queue.tlsrpt import Count, message, parse_record, report


@pytest.mark.parametrize(
    "records, expected",
    [
        (["v=TLSRPTv1; rua=mailto:tls@x.test"], ["tls@x.test"]),
        (["v=TLSRPTv1;rua=mailto:a@x.test,https://r.x.test/tlsrpt, mailto:b%40c@y.test"], ["a@x.test"]),  # b%40c: two @
        (["v=TLSRPTv1; rua=mailto:reports%2Btls@x.test"], ["reports+tls@x.test"]),
        (["v=TLSRPTv1; rua=https://r.x.test/v1"], []),  # https only: nothing we send to
        (["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@x.test"], ["tls@x.test"]),  # other TXT records are not ours
        (["v=TLSRPTv1; rua=mailto:a@x.test", "v=TLSRPTv1; rua=mailto:b@x.test"], None),  # two: none (§3)
        (["v=TLSRPTv1;"], None),  # no rua
        ([], None),
        (["v=TLSRPTv2; rua=mailto:a@x.test"], None),
        (["v=TLSRPTv1; rua=mailto:a@x.test%3E%0D%0ABcc:%20victim@y.test"], []),  # no header injection
        (["v=TLSRPTv1; rua=mailto:a<b@x.test,mailto:@x.test,mailto:a@,mailto:a@x_y.test"], []),
        (["v=TLSRPTv1; rua=" + ",".join(f"mailto:r{i}@x.test" for i in range(20))], [f"r{i}@x.test" for i in range(5)]),
    ],
)
def test_the_record_gives_the_mailto_addresses(records, expected):
    assert parse_record(records) == expected


STS = "version: STSv1\nmode: enforce\nmx: *.mx.x.test\nmax_age: 86400"


def test_the_report_counts_sessions_per_policy_and_failures_by_hosts():
    counts = [
        Count("no-policy-found", "", "mx1.x.test", "198.51.100.7", "success", "", 40),
        Count("no-policy-found", "", "mx2.x.test", "198.51.100.8", "starttls-not-supported", "", 3),
        Count("sts", STS, "a.mx.x.test", "198.51.100.9", "success", "", 7),
        Count("sts", STS, "a.mx.x.test", "198.51.100.9", "certificate-expired", "certificate has expired", 2),
    ]
    got = report(counts, date(2026, 12, 6), "x.test", "Mailflow at mx.daum.test", "mailto:tls@daum.test", "rid-1")
    assert got["date-range"] == {"start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z"}
    assert (got["organization-name"], got["contact-info"], got["report-id"]) == ("Mailflow at mx.daum.test", "mailto:tls@daum.test", "rid-1")
    none, sts = got["policies"]
    assert none["policy"] == {"policy-type": "no-policy-found", "policy-domain": "x.test"}
    assert none["summary"] == {"total-successful-session-count": 40, "total-failure-session-count": 3}
    assert none["failure-details"] == [
        {"result-type": "starttls-not-supported", "failed-session-count": 3, "receiving-mx-hostname": "mx2.x.test", "receiving-ip": "198.51.100.8"}
    ]
    assert sts["policy"] == {"policy-type": "sts", "policy-domain": "x.test", "policy-string": STS.split("\n"), "mx-host": ["*.mx.x.test"]}
    assert sts["summary"] == {"total-successful-session-count": 7, "total-failure-session-count": 2}
    assert sts["failure-details"][0]["result-type"] == "certificate-expired"
    assert sts["failure-details"][0]["additional-information"] == "certificate has expired"


def test_the_mail_is_a_multipart_report_with_the_gzipped_json():
    body = report([Count("no-policy-found", "", "mx.x.test", "", "success", "", 1)], date(2026, 12, 6), "x.test", "org", "mailto:t@d.test", "rid-2")
    raw = message(body, date(2026, 12, 6), "x.test", "mx.daum.test", "t@daum.test", "tls@x.test", "Q1@mx.daum.test", datetime(2026, 12, 7, 1, tzinfo=UTC))
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    m = email.message_from_bytes(raw)
    assert m["TLS-Report-Domain"] == "x.test" and m["TLS-Report-Submitter"] == "mx.daum.test"
    assert m["Subject"] == "Report Domain: x.test Submitter: mx.daum.test Report-ID: <rid-2>"
    assert m.get_content_type() == "multipart/report" and m.get_param("report-type") == "tlsrpt"
    text, attached = m.get_payload()
    assert text.get_content_type() == "text/plain"
    assert attached.get_content_type() == "application/tlsrpt+gzip"
    start, end = 1796515200, 1796515200 + 86399
    assert attached.get_filename() == f"mx.daum.test!x.test!{start}!{end}.json.gz"
    assert json.loads(gzip.decompress(base64.b64decode(attached.get_payload()))) == body
