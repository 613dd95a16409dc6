"""Certificates from a real ACME server: pebble (Let's Encrypt's test server), started by each test, asking
our DNS server for the names and validating on the renewer's own challenge listeners.

    HTTP-01 and TLS-ALPN-01 each get a certificate for two names that chains to pebble's root;
    a renew window that is open gives a new certificate (new serial, new key, key file 0600);
    a current certificate is left alone; a failing order (a name pebble cannot resolve) keeps the
    old pair byte for byte and says why; `python -m mailflow.certs --once` does the same as a process.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from mailflow import tls
from mailflow.certs import files
from mailflow.certs.order import OrderFailed
from mailflow.certs.renewer import Outcome, Renewer
from mailflow.certs.settings import Settings
from mailflow.stack import free_port
from tests.support import pebble as pebble_support
from tests.support.dns import DnsServer
from tests.support.pebble import Pebble

pytestmark = pytest.mark.skipif(
    not pebble_support.available(), reason="pebble is not installed (apt-get install pebble; .ci/run does)"
)

NAMES = ["mail.example.test", "imap.example.test"]
ZONE = "\n".join(f"{n}. 60 IN A 127.0.0.1" for n in NAMES)


@pytest.fixture
def acme(tmp_path):
    """(pebble, a function making Settings for it) with DNS for NAMES and free challenge ports."""
    http_port, tls_port = free_port(), free_port()
    with DnsServer(ZONE) as dns, Pebble(tmp_path / "pebble", dns.address, http_port, tls_port) as server:

        def settings(**kw) -> Settings:
            given = dict(
                directory=server.directory,
                ca_file=str(server.ca_file),
                contact="postmaster@example.test",
                hostnames=",".join(NAMES),
                http_listen=f"127.0.0.1:{http_port}",
                tls_listen=f"127.0.0.1:{tls_port}",
                tls_cert=str(tmp_path / "tls" / "cert.pem"),
                tls_key=str(tmp_path / "tls" / "key.pem"),
                request_timeout_seconds=10,
                order_timeout_seconds=30,
            )
            given.update(kw)
            return Settings(**given)

        yield server, settings


def check(settings: Settings) -> Outcome:
    """One check with the challenge listener up, as the process makes it."""

    async def one() -> Outcome:
        renewer = Renewer(settings)
        await renewer.start()
        try:
            return await asyncio.to_thread(renewer.check)
        finally:
            await renewer.stop()

    return asyncio.run(one())


def chain_of(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def assert_chains_to(chain: list[x509.Certificate], root_pem: bytes) -> None:
    """Each certificate is signed by the next, the last by pebble's root."""
    root = x509.load_pem_x509_certificate(root_pem)
    for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
        cert.verify_directly_issued_by(issuer)


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_a_certificate_for_every_name_that_chains_to_the_acme_root(acme, challenge):
    server, settings = acme
    s = settings(challenge=challenge)
    files_before = tls.ensure_self_signed(Path(s.tls_cert), Path(s.tls_key), NAMES[0])  # as tlsinit leaves it
    assert files_before

    assert check(s) is Outcome.INSTALLED

    chain = chain_of(s.tls_cert)
    assert files.installed_names(chain[0]) == set(NAMES)
    assert_chains_to(chain, server.root())
    assert files.key_matches(Path(s.tls_key), chain[0])
    assert stat.S_IMODE(Path(s.tls_key).stat().st_mode) == 0o600
    account = Path(s.tls_key).parent / "acme-account.key"
    assert stat.S_IMODE(account.stat().st_mode) == 0o600
    tls.server_context(s.tls_cert, s.tls_key)  # what every listener does with the pair


def test_renews_inside_the_window_and_leaves_a_current_certificate_alone(acme):
    server, settings = acme
    s = settings()
    assert check(s) is Outcome.INSTALLED
    first = chain_of(s.tls_cert)[0]
    first_key = Path(s.tls_key).read_bytes()
    account = (Path(s.tls_key).parent / "acme-account.key").read_bytes()

    assert check(s) is Outcome.CURRENT  # pebble's certificates live for years: not due
    assert chain_of(s.tls_cert)[0].serial_number == first.serial_number

    lifetime_days = (first.not_valid_after_utc - first.not_valid_before_utc).days
    due = settings(renew_before_days=lifetime_days + 1)  # the window is open already
    assert check(due) is Outcome.INSTALLED
    second = chain_of(s.tls_cert)[0]
    assert second.serial_number != first.serial_number
    assert Path(s.tls_key).read_bytes() != first_key  # a new key for every certificate
    assert files.key_matches(Path(s.tls_key), second)
    assert stat.S_IMODE(Path(s.tls_key).stat().st_mode) == 0o600
    assert (Path(s.tls_key).parent / "acme-account.key").read_bytes() == account  # the same account
    assert_chains_to(chain_of(s.tls_cert), server.root())
    assert not [p.name for p in Path(s.tls_key).parent.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_order_keeps_the_old_pair_and_says_why(acme):
    _, settings = acme
    s = settings()
    assert check(s) is Outcome.INSTALLED
    cert, key = Path(s.tls_cert).read_bytes(), Path(s.tls_key).read_bytes()

    unknown = settings(hostnames=",".join([*NAMES, "nowhere.example.test"]))  # NXDOMAIN for pebble
    with pytest.raises(OrderFailed, match="nowhere.example.test") as failed:
        check(unknown)
    assert "acme:error:connection" in str(failed.value) and "resolve" in str(failed.value)
    assert Path(s.tls_cert).read_bytes() == cert
    assert Path(s.tls_key).read_bytes() == key


def test_the_loop_retries_a_failed_order_with_backoff(acme, caplog):
    _, settings = acme
    s = settings(hostnames="nowhere.example.test", retry_seconds=0.2, check_interval_seconds=60)
    asyncio.run(retries_twice(s, caplog))
    assert not Path(s.tls_cert).exists()


async def retries_twice(s: Settings, caplog) -> None:
    renewer = Renewer(s)
    await renewer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(renewer.run(stop))
    try:
        for _ in range(300):
            failed = [r for r in caplog.records if "certificate order failed" in r.getMessage()]
            if len(failed) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(failed) >= 2, "the loop did not try again"
        assert "(2 in a row), next try in" in failed[1].getMessage()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await renewer.stop()


def test_the_process_once(acme, tmp_path):
    server, settings = acme
    s = settings(challenge="tls-alpn-01")
    env = {
        "PATH": "/usr/bin:/bin",
        "MAILFLOW_ACME_DIRECTORY": s.directory,
        "MAILFLOW_ACME_CA_FILE": s.ca_file,
        "MAILFLOW_ACME_HOSTNAMES": s.hostnames,
        "MAILFLOW_ACME_CHALLENGE": s.challenge,
        "MAILFLOW_ACME_TLS_LISTEN": s.tls_listen,
        "MAILFLOW_TLS_CERT": s.tls_cert,
        "MAILFLOW_TLS_KEY": s.tls_key,
    }
    run = subprocess.run(
        [sys.executable, "-m", "mailflow.certs", "--once"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "installed a certificate for imap.example.test, mail.example.test" in run.stdout + run.stderr
    assert_chains_to(chain_of(s.tls_cert), server.root())

    env["MAILFLOW_ACME_HOSTNAMES"] = "nowhere.example.test"
    run = subprocess.run(
        [sys.executable, "-m", "mailflow.certs", "--once"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "certificate order failed" in run.stdout + run.stderr
