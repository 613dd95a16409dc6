"""A stack configured for ACME gets its certificate from a real pebble with no manual step, serves it on
SMTPS once smtp-ingress (re)loads it, and renews it, in one run.

pebble is started by the test and asks the test's DNS server for mail.example.test (127.0.0.1); the
stack's renewer (`python -m mailflow.certs`, started by Stack because MAILFLOW_ACME_DIRECTORY is set)
answers HTTP-01 on the port pebble validates. The renew window is set longer than pebble's certificates
live and the check interval to 2 s, so every check renews: a second serial proves renewal.
"""

from __future__ import annotations

import socket
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mailflow.certs import files
from mailflow.stack import Ports, Stack
from tests.support import free_port, wait_for
from tests.support import pebble as pebble_support
from tests.support.dns import DnsServer
from tests.support.pebble import Pebble

pytestmark = pytest.mark.skipif(
    not pebble_support.available(), reason="pebble is not installed (apt-get install pebble; .ci/run does)"
)

NAME = "mail.example.test"


def acme_serial(cert_path, root: x509.Certificate) -> int | None:
    """The serial of the certificate at `cert_path` if pebble issued it (its chain ends at `root`)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
        for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
            cert.verify_directly_issued_by(issuer)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return None
    return chain[0].serial_number


def test_a_stack_gets_serves_and_renews_its_certificate(tmp_path):
    http_port = free_port()
    with DnsServer(f"{NAME}. 60 IN A 127.0.0.1") as dns, Pebble(tmp_path / "pebble", dns.address, http_port, free_port()) as pebble:
        root_pem = pebble.root()
        root = x509.load_pem_x509_certificate(root_pem)
        (tmp_path / "root.pem").write_bytes(root_pem)
        env = {
            "MAILFLOW_ACME_DIRECTORY": pebble.directory,
            "MAILFLOW_ACME_CA_FILE": str(pebble.ca_file),
            "MAILFLOW_ACME_CONTACT": "postmaster@example.test",
            "MAILFLOW_ACME_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "MAILFLOW_ACME_RENEW_BEFORE_DAYS": "100000",
            "MAILFLOW_ACME_CHECK_INTERVAL_SECONDS": "2",
        }
        with Stack(tmp_path / "stack", Ports.free(), hostname=NAME, env=env, services=("queue", "smtp-ingress")) as st:
            cert_path = st.data_dir / "tls" / "cert.pem"
            key_path = st.data_dir / "tls" / "key.pem"
            first = wait_for(lambda: acme_serial(cert_path, root), timeout=60, what="a certificate from pebble")

            st.restart("smtp-ingress")  # loads the pair the renewer wrote
            ctx = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
            with socket.create_connection((st.ports.host, st.ports.smtps), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=NAME) as tls_sock:  # verified: pebble's chain, the name
                    served = x509.load_der_x509_certificate(tls_sock.getpeercert(binary_form=True))
            assert files.installed_names(served) == {NAME}
            assert served.issuer != served.subject

            wait_for(lambda: acme_serial(cert_path, root) not in (None, first), timeout=60, what="a renewal")
            assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
            assert st.renewer is not None and st.renewer.poll() is None
            installed = "installed a certificate for mail.example.test"
            wait_for(lambda: st.renewer_log().count(installed) >= 2, timeout=10, what="the renewals logged")
