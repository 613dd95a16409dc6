"""docker compose for real (issue 7 §1, issue 13 §6): the stack from the one image built here (each
service healthy by the image's own HEALTHCHECK) carries a message from SMTP to IMAP and POP3;
`mailflow status` and `mailflow config check` inside a container see it all well; then
`up --scale delivery=3` runs three delivery containers on the same durable consumers of stream JOBS.

Needs a Docker engine and the base images: `make test-compose` runs deploy/ci/local-images.sh first and
sets MAILFLOW_TEST_COMPOSE=1; without it this module is skipped. The stack runs as its own compose
project on free loopback ports, with fresh volumes, and is removed afterwards (its logs are printed when
a test fails). The resolver is pointed at the container's own loopback, so nothing asks real DNS.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import re
import secrets
import smtplib
import ssl
from email.message import EmailMessage

import pytest

from mailflow.contracts import streams
from tests.deploy.support import SERVICES, Compose
from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("MAILFLOW_TEST_COMPOSE") != "1", reason="set by `make test-compose`"),
]

DOMAIN = "example.test"
USER = f"alice@{DOMAIN}"
PASSWORD = "correct horse battery staple"
SCALED_MESSAGES = 30
SCALED_MAX = 150


def tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the stack made its own self-signed certificate (tls-init)
    return ctx


@pytest.fixture(scope="module")
def stack(request):
    with Compose().running(request, healthy=["nats", "postgres", *SERVICES]) as compose:
        yield compose


def message(subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@remote.test"
    msg["To"] = USER
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@remote.test>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def send(port: int, raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("client.remote.test")
        smtp.mail("bob@remote.test")
        smtp.rcpt(USER)
        code, reply = smtp.data(raw)
    assert code == 250, reply
    match = re.search(rb"queued as (\S+)", reply)
    return match.group(1).decode() if match else ""


def imap_messages(port: int) -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    try:
        imap.starttls(tls_client())
        imap.login(USER, PASSWORD)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK", data
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        imap.logout()


def test_services_run_as_the_unprivileged_user(stack):
    """...while smtp-ingress and imap-pop3 still listen on the standard ports (25, 143...)."""
    for service in SERVICES:
        assert stack.exec(service, "id", "-u").strip() == "10001", service


def test_status_and_config_check_inside_a_container(stack):
    report = json.loads(stack.exec("queue", "mailflow", "status", "--json"))
    assert report["ok"], report
    versions = {s["version"] for s in report["services"].values()}
    assert len(versions) == 1 and None not in versions, "one image, one version"
    assert report["nats"]["jetstream"] and report["databases"] == {"mailbox-store": True, "queue": True}
    assert set(report["queue"]["states"]) >= {"queued", "deferred"}
    for service in SERVICES:
        checked = stack.run("exec", "-T", service, "mailflow", "config", "check", "--service", service, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "no errors" in checked.stdout and "****" in checked.stdout, "settings shown, secrets masked"


def test_mail_round_trip_through_the_published_ports(stack):
    assert "added" in stack.exec("mailbox-store", "mailflow", "domain", "add", DOMAIN)
    assert "added" in stack.exec("mailbox-store", "mailflow", "user", "add", USER, "--password", PASSWORD)

    raw = message("through compose", "Sent over the published SMTP port.\n")
    queue_id = send(stack.ports["SMTP"], raw)
    assert queue_id

    fetched = wait_for(
        lambda: imap_messages(stack.ports["IMAP"]), timeout=60, interval=0.5, what="the message in INBOX"
    )
    assert len(fetched) == 1
    assert fetched[0].endswith(raw), "IMAP returns the bytes sent (after the Received: header)"

    pop = poplib.POP3("127.0.0.1", stack.ports["POP3"], timeout=60)
    try:
        pop.stls(tls_client())
        pop.user(USER)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        assert count == 1
        _, lines, _ = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == fetched[0]
    finally:
        pop.quit()

    trace = stack.exec("queue", "mailflow", "trace", queue_id)
    for step in ("smtp-ingress", "queue", "delivery", "mailbox-store"):
        assert step in trace, trace


def jetstream_consumers(stack: Compose) -> dict[tuple[str, str], dict]:
    out = stack.exec("nats", "wget", "-q", "-O", "-", "http://127.0.0.1:8222/jsz?consumers=true")
    found = {}
    for account in json.loads(out).get("account_details", []):
        for stream in account.get("stream_detail", []):
            for consumer in stream.get("consumer_detail") or []:
                found[(stream["name"], consumer["name"])] = consumer
    return found


def delivered_by(stack: Compose, index: int) -> float:
    """Recipients this delivery container delivered, from its own /metrics (a JOBS message may carry
    several jobs, so recipients are counted, not messages)."""
    script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/metrics').read().decode())"
    text = stack.exec("delivery", "python", "-c", script, index=index)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mailflow_delivery_recipients_total{") and 'outcome="delivered"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_scaled_delivery_shares_one_stream(stack):
    before = len(imap_messages(stack.ports["IMAP"]))
    stack.run("up", "-d", "--no-recreate", "--scale", "delivery=3", timeout=300)
    stack.wait_healthy(["delivery"], count={"delivery": 3}, timeout=120)

    consumers = jetstream_consumers(stack)
    # the durable every delivery binds: job batches (delivery.job)
    jobs = {streams.DELIVERY}
    assert {key for key in consumers if key[0] == "JOBS"} == jobs, "the same durables for all containers"
    for key in jobs:
        assert consumers[key]["num_waiting"] >= 3, f"pull requests from every container on {key}"

    counts_before = [delivered_by(stack, i) for i in (1, 2, 3)]

    def handled() -> list[float]:
        return [delivered_by(stack, i) - counts_before[i - 1] for i in (1, 2, 3)]

    # One message at a time, each stored before the next is sent: every one is its own JOBS message
    # (a burst would leave in batches of up to 32 jobs, and one container could take a whole burst).
    # JetStream gives each to one of the pull requests waiting from the three containers; which one
    # is up to JetStream, so keep sending (SCALED_MESSAGES at least, SCALED_MAX at most) until every
    # container has taken some.
    sent = 0
    with smtplib.SMTP("127.0.0.1", stack.ports["SMTP"], timeout=60) as smtp:
        while sent < SCALED_MAX and (sent < SCALED_MESSAGES or sent % 10 or not all(h > 0 for h in handled())):
            smtp.sendmail("bob@remote.test", [USER], message(f"scaled {sent}", f"message {sent}\n"))
            wait_for(
                lambda n=sent: len(imap_messages(stack.ports["IMAP"])) >= before + n + 1,
                timeout=60,
                interval=0.05,
                what=f"scaled message {sent} stored",
            )
            sent += 1

    assert len(imap_messages(stack.ports["IMAP"])) == before + sent, "each message stored exactly once"
    per_container = handled()
    print(f"\nrecipients delivered per delivery container: {per_container} ({sent} messages)")
    assert sum(per_container) == sent
    assert all(h > 0 for h in per_container), f"every container took jobs from the shared consumer: {per_container}"
    for key in jobs:
        final = jetstream_consumers(stack)[key]
        assert final["num_pending"] == 0 and final["num_ack_pending"] == 0
