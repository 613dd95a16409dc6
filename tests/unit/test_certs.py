"""mailflow.certs without an ACME server: when a certificate is due, the atomic writes, the account key,
the backoff, and the challenge listeners over real loopback sockets (the orders themselves are tested
against pebble in tests/integration/test_acme.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailflow import tls
from mailflow.certs import files
from mailflow.certs.challenges import ACME_IDENTIFIER, ALPN, MAX_HEAD, Responders
from mailflow.certs.renewer import Renewer
from mailflow.certs.settings import Settings

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def issued(tmp: Path, names: list[str], days: float, self_signed: bool = False, age_days: float = 1) -> tuple[Path, Path]:
    """A pair as an ACME server would issue it (issuer != subject unless self_signed), written to tmp."""
    key = files.new_key()
    issuer_key = key if self_signed else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    start = NOW - dt.timedelta(days=age_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    files.write_pair(cert_path, key_path, cert.public_bytes(Encoding.PEM), files.key_pem(key))
    return cert_path, key_path


# --- when to order ---------------------------------------------------------------------------------


def test_a_good_certificate_is_left_alone_until_its_window(tmp_path):
    cert, key = issued(tmp_path, ["mail.example.test", "imap.example.test"], days=90)
    assert files.why_order(cert, key, ["mail.example.test"], None, NOW) is None
    assert files.why_order(cert, key, ["imap.example.test", "mail.example.test"], 30, NOW) is None
    # 89 days left: due when the window is 89 days or more
    assert "expires" in files.why_order(cert, key, ["mail.example.test"], 89.5, NOW)


@pytest.mark.parametrize(
    "lifetime, left, due",
    [
        (90, 31, False),  # 90 days: the window is 30 days
        (90, 29, True),
        (6, 2.5, False),  # 6 days (short-lived): a third, 2 days
        (6, 1.5, True),
    ],
)
def test_the_automatic_window_is_30_days_or_a_third_of_a_short_life(tmp_path, lifetime, left, due):
    cert, key = issued(tmp_path, ["mail.example.test"], days=lifetime, age_days=lifetime - left)
    assert (files.why_order(cert, key, ["mail.example.test"], None, NOW) is not None) is due


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "no readable certificate"),
        ("garbage", "no readable certificate"),
        ("self-signed", "self-signed"),
        ("names", "does not cover imap.example.test"),
        ("other key", "key does not match"),
    ],
)
def test_reasons_to_order(tmp_path, case, reason):
    cert, key = issued(tmp_path, ["mail.example.test"], days=90, self_signed=case == "self-signed")
    if case == "missing":
        cert.unlink()
    elif case == "garbage":
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    elif case == "other key":
        key.write_bytes(files.key_pem(files.new_key()))
    names = ["mail.example.test", "imap.example.test"] if case == "names" else ["mail.example.test"]
    assert reason in files.why_order(cert, key, names, None, NOW)


def test_tlsinit_pair_is_ordered_over(tmp_path):
    tls.ensure_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", "mail.example.test")
    assert "self-signed" in files.why_order(tmp_path / "cert.pem", tmp_path / "key.pem", ["mail.example.test"], None, NOW)


def test_an_oversized_certificate_file_is_not_read(tmp_path):
    (tmp_path / "cert.pem").write_bytes(b"x" * (files.MAX_PEM_BYTES + 1))
    assert files.installed(tmp_path / "cert.pem") is None


# --- writing ---------------------------------------------------------------------------------------


def test_the_pair_replaces_the_old_one_with_the_key_private(tmp_path):
    cert, key = issued(tmp_path, ["mail.example.test"], days=90)
    key.chmod(0o644)
    old_inode = cert.stat().st_ino
    files.write_pair(cert, key, b"CHAIN", b"KEY")
    assert (cert.read_bytes(), key.read_bytes()) == (b"CHAIN", b"KEY")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert cert.stat().st_ino != old_inode  # renamed over, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem"]


def test_the_account_key_is_made_once_and_kept(tmp_path):
    path = tmp_path / "tls" / "acme-account.key"
    first = files.account_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert files.account_key(path).thumbprint() == first.thumbprint()


def test_a_foreign_account_key_is_refused_and_kept(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path = tmp_path / "acme-account.key"
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.write_bytes(pem)
    with pytest.raises(ValueError, match="EC private key"):
        files.account_key(path)
    assert path.read_bytes() == pem


def test_settings_name_the_certificate():
    s = Settings(hostname="Mail.Example.Test")
    assert s.names() == ["mail.example.test"]
    assert Settings(hostnames="mail.bücher.example").names() == ["mail.xn--bcher-kva.example"]
    with pytest.raises(ValueError):
        Settings(hostnames="a..b.example").names()
    s = Settings(hostnames="a.test, B.test.,a.test", contact="me@a.test")
    assert s.names() == ["a.test", "b.test"] and s.contact_url() == "mailto:me@a.test"
    with pytest.raises(ValueError):
        Settings(challenge="dns-01")


# --- the loop's timing -----------------------------------------------------------------------------


def settings(tmp_path: Path, **kw) -> Settings:
    return Settings(
        directory="https://acme.invalid/dir",
        hostnames="mail.example.test",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        **kw,
    )


def test_retries_double_up_to_the_check_interval(tmp_path):
    r = Renewer(settings(tmp_path, retry_seconds=60, check_interval_seconds=3600))
    assert [r.retry_delay(n) for n in (1, 2, 3, 6, 7, 100)] == [60, 120, 240, 1920, 3600, 3600]


def test_the_next_check_is_the_window_or_the_interval(tmp_path):
    issued(tmp_path, ["mail.example.test"], days=90, age_days=59.5)  # the window opens in 12 h
    r = Renewer(settings(tmp_path, check_interval_seconds=86400), now=lambda: NOW)
    assert r.next_check() == pytest.approx(12 * 3600)
    r = Renewer(settings(tmp_path, check_interval_seconds=3600), now=lambda: NOW)
    assert r.next_check() == 3600
    r = Renewer(settings(tmp_path, check_interval_seconds=3600, renew_before_days=1000), now=lambda: NOW)
    assert r.next_check() == 3600  # already due (window longer than the life): no busy loop


@pytest.mark.parametrize(
    "given, problem",
    [({"directory": ""}, "MAILFLOW_ACME_DIRECTORY"), ({"tls_key": ""}, "MAILFLOW_TLS_KEY"), ({"hostnames": " , "}, "no hostname")],
)
def test_a_renewer_that_cannot_work_says_so(tmp_path, given, problem):
    s = settings(tmp_path).model_copy(update=given)
    if given.get("hostnames"):
        s = s.model_copy(update={"hostname": ""})
    with pytest.raises(ValueError, match=problem):
        Renewer(s)


# --- the challenge listeners, over real sockets ----------------------------------------------------


async def http_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


async def test_http01_answers_only_the_tokens_being_proven():
    r = Responders()
    await r.start("127.0.0.1:0", None)
    port = r.addresses()[0][1]
    try:
        r.prove_http("tok-1", "tok-1.thumb")
        ok = await http_exchange(port, b"GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"\r\n\r\ntok-1.thumb")
        head = await http_exchange(port, b"HEAD /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        for path in (b"/.well-known/acme-challenge/other", b"/", b"/.well-known/acme-challenge/"):
            no = await http_exchange(port, b"GET " + path + b" HTTP/1.1\r\n\r\n")
            assert no.startswith(b"HTTP/1.1 404 "), path
        post = await http_exchange(port, b"POST /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405 ")
        r.clear()
        gone = await http_exchange(port, b"GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n\r\n")
        assert gone.startswith(b"HTTP/1.1 404 ")
        # a head longer than MAX_HEAD: closed without an answer
        assert await http_exchange(port, b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n") == b""
    finally:
        await r.stop()


def tls_hello(port: int, name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)), s.selected_alpn_protocol()


async def test_tls_alpn01_presents_the_challenge_certificate_for_the_name_only():
    r = Responders()
    await r.start(None, "127.0.0.1:0")
    port = r.addresses()[0][1]
    try:
        digest = bytes(range(32))
        r.prove_tls("mail.example.test", digest)
        cert, alpn = await asyncio.to_thread(tls_hello, port, "MAIL.example.test", [ALPN])
        assert alpn == ALPN
        assert files.installed_names(cert) == {"mail.example.test"}
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        assert ext.critical and ext.value.value == b"\x04\x20" + digest
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(tls_hello, port, "other.example.test", [ALPN])
        r.clear()
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(tls_hello, port, "mail.example.test", [ALPN])
    finally:
        await r.stop()


# --- the ACME server's answers are bounded ---------------------------------------------------------


@pytest.fixture
def huge_directory():
    """An HTTP server whose every answer is 2 MiB of JSON-ish bytes, without Content-Length."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{" + b" " * (2 * 1024 * 1024) + b"}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/directory"
    server.shutdown()
    server.server_close()


def test_an_oversized_answer_from_the_acme_server_fails_the_order(tmp_path, huge_directory):
    from mailflow.certs import order

    s = settings(tmp_path).model_copy(update={"directory": huge_directory, "request_timeout_seconds": 5})
    with pytest.raises(order.OrderFailed, match="answered more than 1048576 bytes"):
        order.obtain(s, tmp_path / "acme-account.key", Responders())


def test_a_second_renewer_on_the_same_folder_skips_its_turn(tmp_path):
    import fcntl
    import os

    from mailflow.certs.renewer import Outcome

    r = Renewer(settings(tmp_path))  # no certificate: it would order (from an address that does not exist)
    fd = os.open(tmp_path / ".acme.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the other renewer, at work
        assert r.check() is Outcome.BUSY
    finally:
        os.close(fd)
    assert not (tmp_path / "cert.pem").exists()
