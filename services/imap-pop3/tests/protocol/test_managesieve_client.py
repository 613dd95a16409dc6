"""ManageSieve with a real client: Debian's `sieve-connect` uploads, lists, activates and downloads a
script over STARTTLS (skipped only where sieve-connect is not installed: apt-get install sieve-connect)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SCRIPT = b'require ["fileinto", "imap4flags"];\r\nif header :contains "subject" "report" {\r\n  addflag "\\\\Flagged";\r\n  fileinto "Reports";\r\n}\r\n'

pytestmark = pytest.mark.skipif(shutil.which("sieve-connect") is None, reason="sieve-connect is not installed")


def sieve_connect(srv, *args: str, password: str = "alice-pw") -> subprocess.CompletedProcess:
    """One sieve-connect run as alice: STARTTLS (--noclearauth: no password in the clear), then PLAIN."""
    r, w = os.pipe()
    os.write(w, password.encode() + b"\n")
    os.close(w)
    try:
        return subprocess.run(
            ["sieve-connect", "--server", "127.0.0.1", "--port", str(srv.port("managesieve")),
             "--user", "alice@example.test", "--passwordfd", str(r), "--notlsverify", "--noclearauth",
             "--authmech", "PLAIN", "--debug", *args],
            pass_fds=(r,), capture_output=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(r)


def test_upload_list_activate_download(srv, tmp_path):
    local = tmp_path / "filter.sieve"
    local.write_bytes(SCRIPT)
    up = sieve_connect(srv, "--upload", "--localsieve", str(local), "--remotesieve", "filter")
    assert up.returncode == 0, up.stderr.decode()
    debug = up.stdout.decode() + up.stderr.decode()
    assert "TLS activated" in debug and '<<< OK "Script stored"' in debug

    listed = sieve_connect(srv, "--list")
    assert listed.returncode == 0 and listed.stdout.decode().split() == ['"filter"']

    active = sieve_connect(srv, "--activate", "--remotesieve", "filter")
    assert active.returncode == 0, active.stderr.decode()
    listed = sieve_connect(srv, "--list")
    assert listed.stdout.decode().split() == ['"filter"', "ACTIVE"]
    assert srv.call(srv.store.active_script("alice@example.test")).script == SCRIPT

    out = tmp_path / "downloaded.sieve"
    down = sieve_connect(srv, "--download", "--remotesieve", "filter", "--localsieve", str(out))
    assert down.returncode == 0, down.stderr.decode()
    assert out.read_bytes() == SCRIPT

    wrong = sieve_connect(srv, "--list", password="wrong")
    assert wrong.returncode != 0


def test_a_broken_script_is_refused_with_its_line(srv, tmp_path):
    local = tmp_path / "broken.sieve"
    local.write_bytes(b'require "fileinto";\r\nif header :is "subject" "x" {\r\n  fileinto "X"\r\n}\r\n')
    up = sieve_connect(srv, "--upload", "--localsieve", str(local), "--remotesieve", "broken")
    assert up.returncode != 0
    assert "line 4" in (up.stdout + up.stderr).decode()
    alice = srv.call(srv.store.authenticate("alice@example.test", "alice-pw"))
    assert srv.call(srv.store.list_scripts(alice)) == []
