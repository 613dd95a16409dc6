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

`prepare` writes the same configuration, HTTPS pair and environment (pebble.env) for a pebble that runs
elsewhere, such as a container (tests/deploy/test_compose_acme.py).
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
# No sleeping before a validation, no nonces rejected at random: orders in well under a second.
ENVIRONMENT = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


def available() -> bool:
    return os.access(PEBBLE, os.X_OK)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _https_pair(folder: Path, names: tuple[str, ...]) -> Path:
    """A CA and a certificate for 127.0.0.1 and `names` signed by it; returns the CA's path."""
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
    alt = [*(x509.DNSName(n) for n in names), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
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


def prepare(
    folder: Path, listen: str, management: str, http_port: int, tls_port: int, names: tuple[str, ...] = ("localhost",),
    paths: Path | None = None,
) -> Path:
    """pebble.json, its HTTPS pair (for `names` and 127.0.0.1, from a throw-away CA: ca.pem) and pebble.env
    (ENVIRONMENT) in `folder`; pebble.json names the pair under `paths` (default: `folder`), where pebble
    will see the folder. Returns pebble.json's path."""
    folder.mkdir(parents=True, exist_ok=True)
    _https_pair(folder, names)
    seen = paths or folder
    config = {
        "pebble": {
            "listenAddress": listen,
            "managementListenAddress": management,
            "certificate": str(seen / "cert.pem"),
            "privateKey": str(seen / "key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    (folder / "pebble.env").write_text("".join(f"{k}={v}\n" for k, v in ENVIRONMENT.items()))
    return folder / "pebble.json"


def get(url: str, ca_file: Path) -> bytes:
    """GET from pebble's HTTPS (its certificate checked against `ca_file`)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
        return r.read()


def root(management: str, ca_file: Path) -> bytes:
    """The root certificate (PEM) of the pebble whose management API is at `management` (https://host:port);
    pebble makes a new one each time it starts."""
    return get(f"{management}/roots/0", ca_file)


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
        config = prepare(
            self.folder, f"{self.host}:{self.port}", f"{self.host}:{self.management_port}", self.http_port, self.tls_port
        )
        env = {**os.environ, **ENVIRONMENT}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(config), "-dnsserver", self.dns],
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
        return get(url, self.ca_file)

    def root(self) -> bytes:
        """Pebble's root certificate (PEM), made anew each time pebble starts."""
        return root(f"https://{self.host}:{self.management_port}", self.ca_file)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
