"""`mailflow dkim ...` and `mailflow dns records` against a real mailbox-store: keys made pending,
activated, rotated and removed; the records printed are zone-file lines a DNS server loads as they are
(dnslib parses them here, and the two-stack test serves them), with no private key anywhere."""

from __future__ import annotations

import base64
import json

import pytest
from dnslib import QTYPE, RR
from typer.testing import CliRunner

from mailflow.cli.dns import records, spf, txt
from mailflow.cli.main import app
from mailflow.stack import Ports, Stack


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("store"), Ports.free(), services=("mailbox-store",)) as st:
        env = {**st.cli_env(), "COLUMNS": "250", "MAILFLOW_HOSTNAME": "mx.keys.test"}

        def run(*args: str, input: str | None = None, check: bool = True):
            result = CliRunner().invoke(app, list(args), input=input, env=env)
            assert not check or result.exit_code == 0, (args, result.output)
            assert "PRIVATE" not in result.output
            return result

        run("domain", "add", "keys.test")
        yield run


def keys(cli) -> list[tuple[str, str]]:
    return [(k["selector"], k["state"]) for k in json.loads(cli("dkim", "list", "--domain", "keys.test", "--json").output)]


def zone(cli, *args: str) -> list[RR]:
    return RR.fromZone(cli("dns", "records", "keys.test", *args).output)


def test_keygen_activate_rotate_remove_and_the_records(cli):
    assert "no DKIM key" in cli("dns", "records", "keys.test").output
    assert cli("dkim", "rotate", "keys.test", check=False).exit_code == 1  # nothing to rotate yet
    made = cli("dkim", "keygen", "keys.test", "--selector", "first").output
    assert "pending" in made and "mailflow dkim activate keys.test first" in made
    assert keys(cli) == [("first", "pending")]
    cli("dkim", "activate", "keys.test", "first")
    made = cli("dkim", "rotate", "keys.test").output
    second = made.split("DKIM key set ")[1].split()[0]
    assert "mailflow dkim remove keys.test first" in made
    assert keys(cli) == [("first", "active"), (second, "pending")]

    rrs = zone(cli, "--dmarc", "reject")
    by = {(str(r.rname), QTYPE[r.rtype]): r for r in rrs}
    assert str(by[("keys.test.", "MX")].rdata) == "10 mx.keys.test."
    assert [str(r.rdata) for r in rrs if QTYPE[r.rtype] == "TXT" and str(r.rname) == "keys.test."] == ['"v=spf1 mx -all"']
    assert str(by[("_dmarc.keys.test.", "TXT")].rdata) == '"v=DMARC1; p=reject; adkim=r; aspf=r"'
    assert str(by[("_submission._tcp.keys.test.", "SRV")].rdata) == "0 1 587 mx.keys.test."
    assert str(by[("_imaps._tcp.keys.test.", "SRV")].rdata) == "0 1 993 mx.keys.test."
    assert str(by[("_pop3._tcp.keys.test.", "SRV")].rdata) == "10 1 110 mx.keys.test."
    dkim = {str(r.rname): b"".join(r.rdata.data) for r in rrs if "_domainkey" in str(r.rname)}
    assert set(dkim) == {f"{s}-{k}._domainkey.keys.test." for s in ("first", second) for k in ("rsa", "ed25519")}
    rsa = dkim["first-rsa._domainkey.keys.test."]
    assert rsa.startswith(b"v=DKIM1; k=rsa; p=") and len(base64.b64decode(rsa.split(b"p=")[1])) == 294  # 2048-bit SPKI
    assert all(len(s) <= 255 for r in rrs if QTYPE[r.rtype] == "TXT" for s in r.rdata.data)
    assert len(by[("first-rsa._domainkey.keys.test.", "TXT")].rdata.data) == 2  # 410 octets: two strings

    cli("dkim", "activate", "keys.test", second)
    assert keys(cli) == [("first", "retired"), (second, "active")]
    refused = cli("dkim", "remove", "keys.test", second, "--yes", check=False)
    assert refused.exit_code == 1 and "activate another" in refused.output
    assert cli("dkim", "remove", "keys.test", "first", input="n\n", check=False).exit_code == 1
    cli("dkim", "remove", "keys.test", "first", "--yes")
    assert keys(cli) == [(second, "active")]
    assert cli("dns", "records", "nowhere.test", check=False).exit_code == 1  # not our domain
    table = cli("dkim", "list").output
    assert second in table and "active" in table


def test_txt_values_are_cut_at_255_octets():
    assert txt("") == '""'
    assert txt("a" * 255) == '"' + "a" * 255 + '"'
    assert txt("a" * 256) == '"' + "a" * 255 + '" "a"'
    assert spf("192.0.2.1") == "v=spf1 mx ip4:192.0.2.1 -all"
    assert spf("2001:db8::1") == "v=spf1 mx ip6:2001:db8::1 -all"
    lines = records("Example.TEST", "mail.example.test.", [], "none")
    assert "example.test.\t3600\tIN\tMX\t10 mail.example.test." in lines
