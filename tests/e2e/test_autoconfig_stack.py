"""The running smtp-ingress process, as `mailflow up` starts it with MAILFLOW_SMTP_HTTPS_PORT set: mail
clients' autoconfiguration answered over HTTPS for a domain added with the CLI (and not for another), and
/metrics telling the notAfter of the certificate its TLS listeners serve (the alert's input)."""

from __future__ import annotations

import socket
import ssl
import urllib.request
import xml.etree.ElementTree as ET

from cryptography import x509

from mailflow.stack import Ports, Stack
from tests.support import free_port

HOST = "mail.example.test"


def https_get(port: int, cafile: str, host: str, path: str) -> tuple[int, bytes]:
    """GET over TLS verified against the stack's own (self-signed) certificate, which names localhost;
    the Host header names the client's host (autoconfig.<domain>)."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_running_smtp_ingress_serves_autoconfig_and_its_certificates_end(tmp_path):
    port = free_port()
    with Stack(tmp_path, Ports.free(), hostname=HOST, env={"MAILFLOW_SMTP_HTTPS_PORT": str(port)}, services=("mailbox-store", "queue", "smtp-ingress")) as st:
        st.cli("domain", "add", "example.test")
        cafile = str(st.data_dir / "tls" / "cert.pem")
        status, body = https_get(port, cafile, "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=alice@example.test")
        assert status == 200
        provider = ET.fromstring(body).find("emailProvider")
        assert provider.get("id") == "example.test"
        assert {s.findtext("hostname") for s in provider.iter() if s.tag.endswith("Server")} == {HOST}
        assert https_get(port, cafile, "autoconfig.theirs.test", "/mail/config-v1.1.xml?emailaddress=eve@theirs.test")[0] == 404

        metrics = urllib.request.urlopen(f"{st.http_url('smtp-ingress')}/metrics", timeout=10).read().decode()
        (line,) = [m for m in metrics.splitlines() if m.startswith("mailflow_smtp_tls_certificate_expiry_timestamp_seconds ")]
        served = x509.load_pem_x509_certificate((st.data_dir / "tls" / "cert.pem").read_bytes()).not_valid_after_utc.timestamp()
        assert float(line.split()[1]) == served
