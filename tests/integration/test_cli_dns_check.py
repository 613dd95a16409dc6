"""`mailflow dns records DOMAIN --check` against a real mailbox-store and a real resolver whose DNS is a
server the test starts: what `mailflow dns records` prints, published as printed, checks ok; a domain
published wrong, partly or behind a failing server gets a line for each record that says so, and exit 1.
The mail host's TLSA record (DANE) comes from MAILFLOW_TLS_CERT: a certificate the test makes."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from typer.testing import CliRunner

from mailflow import mtasts, tls
from mailflow.cli.main import app
from mailflow.stack import Ports, Stack
from tests.support.dns import DnsServer

HOST = "mx.good.test"


@pytest.fixture(scope="module")
def dns():
    with DnsServer(f"{HOST}. 3600 IN A 127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """(our certificate's file, the SHA-256 of its public key in hex, as `openssl pkey -pubout | sha256` gives it)."""
    d = tmp_path_factory.mktemp("tls")
    tls.ensure_self_signed(d / "cert.pem", d / "key.pem", HOST)
    key = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes()).public_key()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return d / "cert.pem", digest.finalize().hex()


@pytest.fixture(scope="module")
def cli(tmp_path_factory, dns, cert):
    resolver_env = {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address, "MAILFLOW_RESOLVER_TIMEOUT": "0.3", "MAILFLOW_RESOLVER_LIFETIME": "0.8"}
    ports = Ports.free()
    with Stack(tmp_path_factory.mktemp("stack"), ports, services=("mailbox-store", "resolver"), env=resolver_env) as st:
        env = {**st.cli_env(), "COLUMNS": "250", "MAILFLOW_HOSTNAME": HOST, "MAILFLOW_TLS_CERT": str(cert[0])}

        def run(*args: str, code: int | None = 0, more: dict[str, str] | None = None) -> list[str]:
            """The output's lines; the exit status must be `code` (None: any, when other tests' records decide it)."""
            result = CliRunner().invoke(app, list(args), env={**env, **(more or {})})
            assert code is None or result.exit_code == code, (args, result.output)
            return result.output.splitlines()

        for domain in ("good.test", "bad.test"):
            run("domain", "add", domain)
            run("dkim", "keygen", domain, "--selector", "s1")
        yield run


def test_records_published_as_printed_check_ok(cli, dns, cert):
    printed = cli("dns", "records", "good.test")
    assert f"_25._tcp.{HOST}.\t3600\tIN\tTLSA\t3 1 1 {cert[1]}" in printed
    dns.add("\n".join(line for line in printed if not line.startswith(";")))
    lines = cli("dns", "records", "good.test", "--check")
    assert lines[:5] == [
        "ok         good.test. MX",
        "ok         good.test. TXT",
        "ok         s1-rsa._domainkey.good.test. TXT",
        "ok         s1-ed25519._domainkey.good.test. TXT",
        "ok         _dmarc.good.test. TXT",
    ]
    assert all(line.startswith("ok ") and line.endswith(" SRV") for line in lines[5:-2]), lines
    assert lines[-2] == f"ok         _25._tcp.{HOST}. TLSA"
    assert "ok         _submissions._tcp.good.test. SRV" in lines
    assert lines[-1] == f"ok         {HOST}. A/AAAA: 127.0.0.1"


def test_missing_and_wrong_records_are_named_and_exit_1(cli, dns):
    printed = [line for line in cli("dns", "records", "bad.test") if not line.startswith(";")]
    rsa = next(line for line in printed if line.startswith("s1-rsa."))
    dns.add("\n".join([
        "bad.test. 3600 IN MX 10 mx.elsewhere.test.",
        'bad.test. 3600 IN TXT "v=spf1 -all"',
        'bad.test. 3600 IN TXT "site-verification=abc"',
        rsa,
    ]))  # fmt: skip
    srv = next(line for line in printed if line.startswith("_imaps._tcp."))
    dns.add(srv.replace(" 993 ", " 994 "))  # the right name, the wrong port
    dns.servfail.add("_dmarc.bad.test")
    lines = cli("dns", "records", "bad.test", "--check", code=1)
    assert lines[:5] == [
        "wrong      bad.test. MX: DNS has 10 mx.elsewhere.test",
        "wrong      bad.test. TXT: DNS has v=spf1 -all",
        "ok         s1-rsa._domainkey.bad.test. TXT",
        "missing    s1-ed25519._domainkey.bad.test. TXT",
        "error      _dmarc.bad.test. TXT: TXT _dmarc.bad.test: NoNameservers",
    ]
    assert "wrong      _imaps._tcp.bad.test. SRV: DNS has 0 1 994 mx.good.test" in lines
    assert "missing    _imap._tcp.bad.test. SRV" in lines


def test_the_mta_sts_record_is_printed_and_checked_when_the_policy_is_served(cli, dns):
    """Its id is the served policy's (smtp-ingress's settings), so a change of policy shows as wrong."""
    sts = {"MAILFLOW_SMTP_HTTPS_PORT": "443", "MAILFLOW_SMTP_MTA_STS_MODE": "enforce"}
    policy = mtasts.published("enforce", "", 604800, HOST)
    assert not any("_mta-sts" in line for line in cli("dns", "records", "good.test"))  # not served: not printed
    printed = cli("dns", "records", "good.test", more=sts)
    assert f'_mta-sts.good.test.\t3600\tIN\tTXT\t"v=STSv1; id={policy.id()}"' in printed
    assert any(line.startswith(f"; MTA-STS (mode enforce, mx {HOST}): https://mta-sts.good.test/.well-known/mta-sts.txt") for line in printed)
    lines = cli("dns", "records", "bad.test", "--check", more=sts, code=1)
    assert "missing    _mta-sts.bad.test. TXT" in lines
    assert lines[-1] == "missing    mta-sts.bad.test. A/AAAA (the MTA-STS policy's host has no address)"
    assert f"_autodiscover._tcp.good.test.\t3600\tIN\tSRV\t0 1 443 {HOST}." in printed  # Outlook's, same listener
    assert "missing    _autodiscover._tcp.bad.test. SRV" in lines
    dns.add(f'_mta-sts.good.test. 3600 IN TXT "v=STSv1; id={policy.id()};"\nmta-sts.good.test. 3600 IN A 127.0.0.1')
    dns.add(f"_autodiscover._tcp.good.test. 3600 IN SRV 0 0 443 {HOST}.")
    lines = cli("dns", "records", "good.test", "--check", more=sts)
    assert "ok         _mta-sts.good.test. TXT" in lines and lines[-1] == "ok         mta-sts.good.test. A/AAAA: 127.0.0.1"
    lines = cli("dns", "records", "good.test", "--check", more={**sts, "MAILFLOW_SMTP_MTA_STS_MODE": "testing"}, code=1)
    assert f"wrong      _mta-sts.good.test. TXT: DNS has v=STSv1; id={policy.id()};" in lines


def test_tlsa_wrong_or_without_a_certificate(cli, dns):
    wrong = "3 1 1 " + "00" * 32
    dns.add(f"_25._tcp.mx2.good.test. 3600 IN TLSA {wrong}")
    lines = cli("dns", "records", "good.test", "--check", "--hostname", "mx2.good.test", code=1)
    assert f"wrong      _25._tcp.mx2.good.test. TLSA: DNS has {wrong}" in lines
    lines = cli("dns", "records", "good.test", "--check", "--hostname", "mx3.good.test", code=1)
    assert "missing    _25._tcp.mx3.good.test. TLSA" in lines
    printed = cli("dns", "records", "good.test", more={"MAILFLOW_TLS_CERT": "/nonexistent/cert.pem"})
    assert "; DANE: no TLSA record (/nonexistent/cert.pem not read: FileNotFoundError)" in printed
    assert not [line for line in printed if "TLSA" in line and not line.startswith(";")]


def test_the_tls_rpt_record_is_printed_and_checked_when_asked_for(cli, dns):
    """RFC 8460 §3: one v=TLSRPTv1 record with the address given."""
    assert any(line.startswith("; TLS-RPT (RFC 8460): give --tls-reports-to") for line in cli("dns", "records", "good.test"))
    printed = cli("dns", "records", "good.test", "--tls-reports-to", "tls-reports@good.test")
    assert '_smtp._tls.good.test.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:tls-reports@good.test"' in printed
    lines = cli("dns", "records", "bad.test", "--check", "--tls-reports-to", "tls-reports@bad.test", code=1)
    assert "missing    _smtp._tls.bad.test. TXT" in lines
    dns.add('_smtp._tls.good.test. 3600 IN TXT "v=TLSRPTv1;rua=mailto:tls-reports@good.test"')
    lines = cli("dns", "records", "good.test", "--check", "--tls-reports-to", "tls-reports@good.test", code=None)
    assert "ok         _smtp._tls.good.test. TXT" in lines
    lines = cli("dns", "records", "good.test", "--check", "--tls-reports-to", "other@good.test", code=1)
    assert "wrong      _smtp._tls.good.test. TXT: DNS has v=TLSRPTv1;rua=mailto:tls-reports@good.test" in lines
    for bad in ("no-at-sign", "a@b.test; rua=mailto:x@evil.test", "a b@c.test"):
        cli("dns", "records", "good.test", "--tls-reports-to", bad, code=2)
