"""docker compose with `--profile acme` for real (issue 15): the stack gets its certificate from a real ACME
server with no manual step, serves it on every TLS port, and renews it, in one run, no service restarted.

pebble (Let's Encrypt's test server) runs as a service of the same project (compose-test-acme.yml: this
machine's Debian pebble in the mailflow image, its configuration and HTTPS pair written here by
tests/support/pebble.py). The `certs` service is configured as an operator would (.env:
MAILFLOW_ACME_DIRECTORY, MAILFLOW_ACME_CONTACT, MAILFLOW_ACME_CA_FILE for pebble's private CA) and
answers HTTP-01 on its port 80, which pebble finds as mail.example.test through Docker's embedded DNS.
The overlay sets a renew window longer than pebble's certificates live and a check every 5 s, so every
check renews. smtp-ingress and imap-pop3 pick the files up themselves (MAILFLOW_TLS_RELOAD_S); the test
reads what the published loopback ports present: a chain to pebble's root (/roots/0 of its management
API) for mail.example.test, first any, then a new serial with a new key on every port.

Needs the Docker engine and images of `make test-compose` and Debian's pebble on this machine (.ci/run
installs it); skipped otherwise. Like the round trip, its own project, free ports, fresh volumes,
removed afterwards.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailflow.certs import files
from tests.deploy.support import Compose
from tests.support import free_port, wait_for
from tests.support import pebble as pebble_support

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("MAILFLOW_TEST_COMPOSE") != "1", reason="set by `make test-compose`"),
    pytest.mark.skipif(not pebble_support.available(), reason="pebble is not installed (apt-get install pebble)"),
]

ACME_FILE = Path(__file__).with_name("compose-test-acme.yml")
NAME = "mail.example.test"  # MAILFLOW_HOSTNAME's default, the certs service's alias in the overlay
PEBBLE_DIR = Path("/etc/pebble")  # where pebble and certs see the folder the test writes
# Every port that speaks TLS, and how: implicit TLS, or STARTTLS/STLS first.
TLS_PORTS = ("SMTP", "SUBMISSION", "SMTPS", "IMAP", "IMAPS", "POP3", "POP3S")
WATCHED = ("smtp-ingress", "imap-pop3", "certs")  # none of them may restart


@dataclass
class AcmeStack:
    compose: Compose
    root_file: Path  # pebble's root (PEM), from its management API


@pytest.fixture(scope="module")
def stack(request):
    with tempfile.TemporaryDirectory(prefix="mailflow-pebble-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # the containers run as 10001
        pebble_support.prepare(
            folder, "0.0.0.0:14000", "0.0.0.0:15000", 80, 443, names=("pebble", "localhost"), paths=PEBBLE_DIR
        )
        for path in folder.iterdir():
            path.chmod(0o644)  # pebble's throw-away HTTPS key included
        management = free_port()
        compose = Compose(
            overlays=[ACME_FILE],
            profiles=["acme"],
            env={
                "MAILFLOW_TEST_PEBBLE": pebble_support.PEBBLE,
                "MAILFLOW_TEST_PEBBLE_DIR": str(folder),
                "MAILFLOW_TEST_PEBBLE_MANAGEMENT": str(management),
                # as an operator's .env says it
                "MAILFLOW_ACME_DIRECTORY": "https://pebble:14000/dir",
                "MAILFLOW_ACME_CONTACT": "postmaster@example.test",
                "MAILFLOW_ACME_CA_FILE": str(PEBBLE_DIR / "ca.pem"),
            },
        )
        with compose.running(request, healthy=["pebble", "smtp-ingress", "imap-pop3"]):
            root_file = folder / "root.pem"
            root_file.write_bytes(pebble_support.root(f"https://127.0.0.1:{management}", folder / "ca.pem"))
            yield AcmeStack(compose, root_file)


def started(compose: Compose) -> dict[str, str]:
    """The container of each WATCHED service, when it started and how often it restarted: another value
    later means it was restarted or replaced."""
    out = {}
    for service in WATCHED:
        (cid,) = compose.containers(service)
        out[service] = f"{cid} {compose.inspect(cid, '{{.State.StartedAt}} {{.RestartCount}}')}"
    return out


def presented(port_name: str, port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    """The certificate a published port presents to `ctx` (after STARTTLS/STLS on the plain ports)."""
    if port_name in ("SMTP", "SUBMISSION"):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=ctx)
            der = smtp.sock.getpeercert(binary_form=True)
    elif port_name == "IMAP":
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            imap.starttls(ctx)
            der = imap.sock.getpeercert(binary_form=True)
        finally:
            imap.logout()
    elif port_name == "POP3":
        pop = poplib.POP3("127.0.0.1", port, timeout=10)
        try:
            pop.stls(ctx)
            der = pop.sock.getpeercert(binary_form=True)
        finally:
            pop.quit()
    else:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=NAME) as tls_sock:
                der = tls_sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def from_pebble(stack: AcmeStack, port_name: str) -> x509.Certificate | None:
    """What the port presents if it chains to pebble's root (the client checks) and names NAME; None while
    it is another certificate (tls-init's self-signed one) or the port does not answer yet."""
    ctx = ssl.create_default_context(cafile=str(stack.root_file))
    ctx.check_hostname = False  # smtplib, imaplib, poplib would check 127.0.0.1; the name is checked below
    try:
        leaf = presented(port_name, stack.compose.ports[port_name], ctx)
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto):
        return None  # ssl.SSLCertVerificationError included: not pebble's yet
    assert files.installed_names(leaf) == {NAME}, leaf.subject
    return leaf


def public_key(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_stack_gets_serves_and_renews_its_certificate_from_the_acme_server(stack):
    before = started(stack.compose)
    assert all(value.endswith(" 0") for value in before.values()), before  # not restarted while starting

    first = {
        port: wait_for(lambda p=port: from_pebble(stack, p), timeout=120, interval=1.0, what=f"pebble's certificate on {port}")
        for port in TLS_PORTS
    }
    log = stack.compose.logs("certs", tail=100000)
    assert f"ordering a certificate for {NAME}: the certificate is self-signed" in log, "tls-init's pair replaced"

    def renewed(port: str) -> x509.Certificate | None:
        leaf = from_pebble(stack, port)
        return leaf if leaf is not None and leaf.serial_number != first[port].serial_number else None

    for port in TLS_PORTS:
        leaf = wait_for(lambda p=port: renewed(p), timeout=60, interval=1.0, what=f"a renewed certificate on {port}")
        assert public_key(leaf) != public_key(first[port]), "a new key with every certificate"

    log = stack.compose.logs("certs", tail=100000)
    assert log.count(f"installed a certificate for {NAME}") >= 2
    assert "certificate order failed" not in log
    assert started(stack.compose) == before, "no service restarted: they reloaded the files themselves"
