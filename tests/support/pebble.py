"""Let's Encrypt's test ACME server, pebble (Debian package `pebble`), started for a test.

    with DnsServer("mail.example.test. 60 IN A 127.0.0.1") as dns, \\
         Pebble(tmp_path, dns.address, http_port=..., tls_port=...) as pebble:
        settings = Settings(directory=pebble.directory, ca_file=str(pebble.ca_file), ...)
        pebble.root()              # PEM of the root the issued chains end at

Pebble validates challenges on `http_port` / `tls_port` of the address our DnsServer gives for each
name (never the internet's DNS). Its own HTTPS certificate is made here, from a throw-away CA in
`ca_file` (the Debian package ships no test certificate). Nonces are never rejected and validation does
not sleep, so an order takes well under a second. `start` raises RuntimeError with pebble's output if
it does not answer within the timeout; `stop` kills it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailflow.stack import free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


def available() -> bool:
    return os.access(PEBBLE, os.X_OK)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _https_pair(folder: Path) -> Path:
    """A CA and a certificate for localhost/127.0.0.1 signed by it; returns the CA's path."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailflow test CA for pebble")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(_pem_key(key))
    return folder / "ca.pem"


class Pebble:
    def __init__(self, folder: Path, dns: str, http_port: int, tls_port: int, host: str = "127.0.0.1"):
        self.folder = Path(folder)
        self.dns, self.http_port, self.tls_port, self.host = dns, http_port, tls_port, host
        self.port = free_port(host)
        self.management_port = free_port(host)
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "pebble.log"

    @property
    def directory(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> Pebble:
        self.folder.mkdir(parents=True, exist_ok=True)
        _https_pair(self.folder)
        config = {
            "pebble": {
                "listenAddress": f"{self.host}:{self.port}",
                "managementListenAddress": f"{self.host}:{self.management_port}",
                "certificate": str(self.folder / "cert.pem"),
                "privateKey": str(self.folder / "key.pem"),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.folder / "pebble.json").write_text(json.dumps(config))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(self.folder / "pebble.json"), "-dnsserver", self.dns],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get(self.directory)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pebble did not start:\n{self.output()}") from None
                time.sleep(0.1)

    def get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read()

    def root(self) -> bytes:
        """Pebble's root certificate (PEM), made anew each time pebble starts."""
        return self.get(f"https://{self.host}:{self.management_port}/roots/0")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
