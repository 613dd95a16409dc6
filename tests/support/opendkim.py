"""OpenDKIM's verifier (`opendkim-testmsg`, Debian's opendkim-tools) pointed at a test's own DNS records.

libopendkim asks the resolver of /etc/resolv.conf, on port 53, and has no option to go elsewhere. So
`verify` serves `zone` from a DnsServer on 127.0.0.9:53 and runs the tool in a private mount namespace
(`unshare -m`) in which /etc/resolv.conf names that server: nothing outside the tool's process sees
the change. That needs root (binding port 53, unshare, mount), as CI has; without it, or without the
tool, `available()` says why and the caller skips.

opendkim-testmsg prints nothing and exits 0 when the message verifies, else says why (exit 70). It
wants one kind of line end (the message is given with LF) and refuses a message without a Date field
as a syntax error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tests.support.dns import DnsServer

HOST = "127.0.0.9"


def available() -> str | None:
    """None if verify() can run here, else the reason it cannot."""
    if shutil.which("opendkim-testmsg") is None:
        return "opendkim-testmsg is not installed (Debian package opendkim-tools)"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "verifying with OpenDKIM needs root and unshare (port 53, a private /etc/resolv.conf)"
    return None


def verify(message: bytes, zone: str) -> tuple[int, str]:
    """(exit status, what the tool said) for `message` with `zone` as the DNS."""
    with DnsServer(zone, host=HOST, port=53), tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write(f"nameserver {HOST}\noptions timeout:2 attempts:2\n")
        conf.flush()
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec opendkim-testmsg', conf.name],
            input=message.replace(b"\r\n", b"\n"),
            capture_output=True,
            timeout=60,
        )
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace").strip()


def only_signature(message: bytes, algorithm: bytes) -> bytes:
    """`message` without its DKIM-Signature fields of any other algorithm (a=), to verify one alone."""
    head, sep, body = message.partition(b"\r\n\r\n")
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [
        f for f in fields
        if not f[0].lower().startswith(b"dkim-signature:") or b"a=" + algorithm + b";" in b"".join(f).replace(b" ", b"")
    ]  # fmt: skip
    return b"\r\n".join(b"\r\n".join(f) for f in kept) + sep + body
