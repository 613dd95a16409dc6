"""What a forwarded copy is sealed with: our Authentication-Results (by authserv-id) and its arc= verdict."""

from __future__ import annotations

import pytest

from mailflow.authn import Arc
from mailflow_delivery.forwarding import chain_of, our_results

OURS = (b"Authentication-Results", b" mx.daum.test;\r\n\tspf=pass smtp.mailfrom=a.test;\r\n\tarc=pass (i=2)")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([OURS], "spf=pass smtp.mailfrom=a.test; arc=pass (i=2)"),  # unfolded on one line
        ([(b"Authentication-Results", b" MX.Daum.Test 1; dkim=pass")], "dkim=pass"),  # case, a version
        ([(b"Authentication-Results", b" mx.other.test; spf=pass"), OURS], "spf=pass smtp.mailfrom=a.test; arc=pass (i=2)"),
        ([(b"Authentication-Results", b" mx.daum.test.evil; spf=pass")], ""),  # not our id
        ([(b"Authentication-Results", b" mx.daum.test")], ""),  # no results part
        ([(b"Subject", b" mx.daum.test; spf=pass")], ""),
        ([], ""),
    ],
)
def test_our_results(fields, expected):
    assert our_results(fields, "mx.daum.test") == expected


SEAL = (b"ARC-Seal", b" i=1; cv=none")
AMS = (b"ARC-Message-Signature", b" i=1")


@pytest.mark.parametrize(
    ("fields", "results", "expected"),
    [
        ([], "", Arc("none")),  # no chain, no verdict: i=1, cv=none
        ([], "spf=pass smtp.mailfrom=a.test", Arc("none")),
        ([SEAL, AMS], "spf=pass; arc=pass (i=1)", Arc("pass", 1)),
        ([SEAL, AMS, SEAL], "ARC=Fail reason=\"x\"", Arc("fail", 2)),
        ([SEAL, AMS], "spf=pass", None),  # a chain nobody here judged: not sealed
        ([AMS], "", None),
    ],
)
def test_chain_of(fields, results, expected):
    assert chain_of(fields, results) == expected
