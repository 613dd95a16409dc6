"""A new certificate under a running stack (issue 15 item 2): the files are replaced (renamed over, as
an ACME renewer or a Kubernetes Secret update does) and, within seconds and with no restart, the next
handshake on every TLS port gets it: SMTP 25 and 587 (STARTTLS), 465, IMAP 143 (STARTTLS), 993, POP3 110
(STLS), 995. A session open at that moment is not dropped and goes on with the certificate it began with."""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailflow import tls
from mailflow.stack import Stack
from tests.e2e.course import unverified

NEW_NAME = "renewed.example.test"


def common_name(der: bytes | None) -> str:
    assert der, "no certificate"
    return x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def served(st: Stack) -> dict[str, str]:
    """The common name each TLS port's next handshake shows."""
    h, p, ctx, out = st.ports.host, st.ports, unverified(), {}
    for name, port in (("smtp", p.smtp), ("submission", p.submission)):
        with smtplib.SMTP(h, port, timeout=30) as s:
            s.starttls(context=ctx)
            out[name] = common_name(s.sock.getpeercert(binary_form=True))
    with smtplib.SMTP_SSL(h, p.smtps, timeout=30, context=ctx) as s:
        out["smtps"] = common_name(s.sock.getpeercert(binary_form=True))
    with imaplib.IMAP4(h, p.imap, timeout=30) as m:
        m.starttls(ctx)
        out["imap"] = common_name(m.sock.getpeercert(binary_form=True))
    with imaplib.IMAP4_SSL(h, p.imaps, ssl_context=ctx, timeout=30) as m:
        out["imaps"] = common_name(m.sock.getpeercert(binary_form=True))
    pop = poplib.POP3(h, p.pop3, timeout=30)
    pop.stls(ctx)
    out["pop3"] = common_name(pop.sock.getpeercert(binary_form=True))
    pop.quit()
    pop = poplib.POP3_SSL(h, p.pop3s, timeout=30, context=ctx)
    out["pop3s"] = common_name(pop.sock.getpeercert(binary_form=True))
    pop.quit()
    return out


def test_a_new_certificate_is_served_on_every_port_without_a_restart(stack, tmp_path):
    before = served(stack)
    assert len(set(before.values())) == 1 and NEW_NAME not in before.values(), before
    pids = {k: p.popen.pid for k, p in stack.procs.items()}

    session = imaplib.IMAP4_SSL(stack.ports.host, stack.ports.imaps, ssl_context=unverified(), timeout=30)
    session.login("alice@example.test", "alice-pw")
    session.select("INBOX")

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.ensure_self_signed(cert, key, NEW_NAME)
    env = stack.common_env()
    live = Path(env["MAILFLOW_TLS_CERT"]), Path(env["MAILFLOW_TLS_KEY"])
    changed = time.monotonic()
    for src, dst in ((key, live[1]), (cert, live[0])):  # key first, then the certificate: a renewer's order
        shutil.copyfile(src, dst.with_suffix(".new"))
        os.replace(dst.with_suffix(".new"), dst)

    deadline, now = changed + 20, served(stack)
    while set(now.values()) != {NEW_NAME} and time.monotonic() < deadline:
        time.sleep(0.5)
        now = served(stack)
    took = time.monotonic() - changed
    print(f"\nnew certificate on every TLS port after {took:.1f} s: {now}")
    assert set(now.values()) == {NEW_NAME}, now

    assert session.noop()[0] == "OK"  # the session from before goes on, on its first certificate
    assert session.select("INBOX")[0] == "OK"
    assert common_name(session.sock.getpeercert(binary_form=True)) == before["imaps"]
    session.logout()
    assert {k: p.popen.pid for k, p in stack.procs.items()} == pids  # nothing was restarted
