"""DANE (dane.py): TLSA records as the resolver gives them, which are usable, the match of a certificate
against records (what a selector takes is mailflow.tlsa's: tests/unit/test_tlsa.py), and the rule each
TLSA answer makes (a DnsLookup answering from a table)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailflow import tlsa
from mailflow.contracts.messages import DnsAnswer, MxHost
from mailflow_delivery.dane import Dane, Tlsa, matches, parse, unusable
from tests.support.pki import self_signed


def certificate(key=None) -> tuple[bytes, bytes]:
    """(DER certificate, DER SubjectPublicKeyInfo as cryptography encodes it), expired: DANE-EE does not care (RFC 7672 §3.1.1)."""
    return self_signed(key, expired=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 1 1 " + "ab" * 32, Tlsa(3, 1, 1, bytes.fromhex("ab" * 32))),
        ("2 0 2 " + "CD" * 64, Tlsa(2, 0, 2, bytes.fromhex("cd" * 64))),
        ("3 1 1", "not a TLSA record: '3 1 1'"),
        ("3 1 1 ab cd", "not a TLSA record: '3 1 1 ab cd'"),
        ("3 1 256 ab", "TLSA fields not numbers 0-255: '3 1 256'"),
        ("3 -1 1 ab", "TLSA fields not numbers 0-255: '3 -1 1'"),
        ("3 ١ 1 ab", "TLSA fields not numbers 0-255: '3 ١ 1'"),  # an Arabic-Indic digit is not one
        ("3 1 1 abc", "TLSA data not hex: 'abc'"),
        ("3 1 1 zz", "TLSA data not hex: 'zz'"),
        ("", "not a TLSA record: ''"),
    ],
)
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    "record, why",
    [
        (Tlsa(3, 1, 1, b"\x01" * 32), None),
        (Tlsa(3, 0, 2, b"\x01" * 64), None),
        (Tlsa(3, 0, 0, b"\x30\x03"), None),
        (Tlsa(2, 0, 1, b"\x01" * 32), "usage 2 not supported (DANE-EE, 3, only)"),
        (Tlsa(1, 1, 1, b"\x01" * 32), "usage 1 not supported (DANE-EE, 3, only)"),
        (Tlsa(0, 1, 1, b"\x01" * 32), "usage 0 not supported (DANE-EE, 3, only)"),
        (Tlsa(3, 2, 1, b"\x01" * 32), "selector 2 unknown"),
        (Tlsa(3, 1, 3, b"\x01" * 32), "matching type 3 unknown"),
        (Tlsa(3, 1, 1, b"\x01" * 31), "data of 31 octets for matching type 1"),
        (Tlsa(3, 1, 2, b"\x01" * 32), "data of 32 octets for matching type 2"),
        (Tlsa(3, 1, 0, b""), "data of 0 octets for matching type 0"),
    ],
)
def test_usable_records(record, why):
    assert unusable(record) == why


def test_each_selector_and_matching_type_matches_and_nothing_else_does():
    der, public = certificate()
    other, other_public = certificate()
    good = [
        Tlsa(3, 0, 0, der),
        Tlsa(3, 0, 1, hashlib.sha256(der).digest()),
        Tlsa(3, 0, 2, hashlib.sha512(der).digest()),
        Tlsa(3, 1, 0, public),
        Tlsa(3, 1, 1, hashlib.sha256(public).digest()),
        Tlsa(3, 1, 2, hashlib.sha512(public).digest()),
    ]
    for record in good:
        assert matches([record], der) == record
        assert matches([record], other) == "matches none of its TLSA records"
    wrong = Tlsa(3, 1, 1, hashlib.sha256(other_public).digest())
    assert matches([wrong, good[4]], der) == good[4]  # any one record of the set is enough
    assert matches([wrong], der) == "matches none of its TLSA records"
    assert matches([Tlsa(3, 0, 0, b"not a certificate")], b"not a certificate") == Tlsa(3, 0, 0, b"not a certificate")  # selector 0 compares octets


def test_the_record_mailflow_dns_records_prints_is_the_one_dane_matches():
    der, _ = certificate(rsa.generate_private_key(65537, 2048))
    assert matches([parse(tlsa.dane_ee(der))], der) == parse(tlsa.dane_ee(der))


def test_a_certificate_without_a_readable_key_fails_with_the_reason():
    records = [Tlsa(3, 1, 1, b"\x01" * 32), Tlsa(3, 1, 2, b"\x01" * 64)]
    why = matches(records, b"\x30\x03\x02\x01\x07")
    assert why.startswith("matches none of its TLSA records; its SubjectPublicKeyInfo could not be read: not a DER certificate")
    assert why.count("could not be read") == 1  # read once, however many records ask for it


class Table:
    """A DnsLookup answering from a dict (name -> DnsAnswer); what it was asked, in `asked`."""

    def __init__(self, answers: dict[str, DnsAnswer]):
        self.answers, self.asked = answers, []

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.asked.append((name, rdtype))
        return self.answers.get(name) or DnsAnswer(name=name, type=rdtype, status="nxdomain", secure=True)


SPKI_HASH = "3 1 1 " + "ab" * 32


@pytest.mark.parametrize(
    "answer, rule",
    [
        (DnsAnswer(name="t", type="TLSA", status="ok", records=[SPKI_HASH], secure=True), "verify"),
        (DnsAnswer(name="t", type="TLSA", status="ok", records=["2 0 1 " + "ab" * 32], secure=True), "encrypt"),
        (DnsAnswer(name="t", type="TLSA", status="ok", records=[SPKI_HASH], secure=False), None),  # insecure TLSA: ignored
        (DnsAnswer(name="t", type="TLSA", status="nodata", secure=True), None),
        (DnsAnswer(name="t", type="TLSA", status="nxdomain", secure=False), None),
        (DnsAnswer(name="t", type="TLSA", status="temp_fail", error="SERVFAIL"), "skip"),
    ],
)
async def test_the_rule_for_each_tlsa_answer(answer, rule, caplog):
    dane = Dane(Table({"_25._tcp.mx.a.test": answer}))
    rules = await dane.rules("a.test", [MxHost(preference=10, host="mx.a.test", addresses=["127.0.0.1"], secure=True)], 25)
    got = rules.get("mx.a.test")
    kind = None if got is None else "skip" if got.skip else "verify" if got.note == "DANE-EE verified" else "encrypt"
    assert kind == rule
    if rule == "skip":
        assert got.skip[0] == "dnssec-invalid" and "SERVFAIL" in got.skip[1]
    if rule == "encrypt":
        assert got.verify(None) is None  # nothing to authenticate: any certificate, or none
        got.record("127.0.0.1", "success", "")  # a success without a usable record is logged as tlsa-invalid
        (line,) = [r for r in caplog.records if r.name == "mailflow_delivery.dane"]
        assert line.getMessage().startswith("DANE tlsa-invalid: no usable TLSA record (usage 2 not supported")
    if rule == "verify":
        assert got.verify(None) == ("validation-failure", "DANE: the server showed no certificate")
        der, _ = certificate()
        assert got.verify(der) == ("validation-failure", "DANE: the certificate of mx.a.test matches none of its TLSA records (3 1 1 abababababababab...)")
        result, detail = got.verify(b"\x30\x00")
        assert result == "validation-failure" and "SubjectPublicKeyInfo could not be read: not a DER certificate" in detail


async def test_insecure_hosts_ask_nothing():
    table = Table({})
    hosts = [MxHost(preference=10, host="mx.a.test", addresses=["127.0.0.1"]), MxHost(preference=20, host="mx2.a.test", addresses=["127.0.0.2"], secure=True)]
    rules = await Dane(table).rules("a.test", hosts, 2525)
    assert rules == {} and table.asked == [("_2525._tcp.mx2.a.test", "TLSA")]
