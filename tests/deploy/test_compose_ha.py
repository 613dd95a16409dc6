"""docker compose with deploy/compose/ha.yml for real (issue 16 §4): NATS as three containers forming
one JetStream cluster, every stream with three replicas; mail still flows with one NATS container killed.

Needs a Docker engine and the base images (`make test-compose`, which sets MAILFLOW_TEST_COMPOSE=1).
The stack is its own compose project on free loopback ports (tests/deploy/support.py's Compose), removed
afterwards.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.deploy.support import ROOT, SERVICES, Compose
from tests.deploy.test_compose_roundtrip import DOMAIN, PASSWORD, USER, imap_messages, message, send
from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("MAILFLOW_TEST_COMPOSE") != "1", reason="set by `make test-compose`"),
]

NODES = ("nats", "nats-2", "nats-3")


@pytest.fixture(scope="module")
def stack(request):
    with Compose(overlays=[ROOT / "deploy/compose/ha.yml"]).running(request, healthy=[*NODES, "postgres", *SERVICES]) as compose:
        yield compose


def streams(stack: Compose, node: str) -> dict[str, dict]:
    """{stream: its cluster info} as `node` reports them."""
    out = stack.exec(node, "wget", "-q", "-O", "-", "http://127.0.0.1:8222/jsz?streams=true&config=true")
    found = {}
    for account in json.loads(out).get("account_details", []):
        for stream in account.get("stream_detail", []):
            found[stream["name"]] = stream
    return found


def test_three_nats_containers_hold_every_stream_three_times(stack):
    seen = streams(stack, "nats-2")
    assert {"MAIL", "BODY", "JOBS", "RESULTS"} <= set(seen)
    for name, stream in seen.items():
        assert stream["config"]["num_replicas"] == 3, name
        cluster = stream["cluster"]
        assert cluster.get("leader") and len(cluster.get("replicas") or []) == 2, (name, cluster)


def test_mail_flows_with_one_nats_container_killed(stack):
    assert "added" in stack.exec("mailbox-store", "mailflow", "domain", "add", DOMAIN)
    assert "added" in stack.exec("mailbox-store", "mailflow", "user", "add", USER, "--password", PASSWORD)
    send(stack.ports["SMTP"], message("before", "all three up"))
    wait_for(lambda: len(imap_messages(stack.ports["IMAP"])) == 1, timeout=60, what="the first message")

    stack.run("kill", "nats")  # SIGKILL; its JetStream store stays on its volume
    # smtp-ingress answers 451 while leaders move (a few seconds): a sender tries again, as ours does here
    wait_for(lambda: try_send(stack, "while one is down"), timeout=60, interval=1.0, what="a 250 with nats killed")
    wait_for(lambda: b"while one is down" in subjects(stack), timeout=90, what="mail stored with nats killed")

    stack.run("start", "nats")
    stack.wait_healthy(["nats"])
    send(stack.ports["SMTP"], message("after", "all three up again"))
    wait_for(lambda: b"after" in subjects(stack), timeout=60, what="mail after the restart")
    # a try answered 451 may still have been stored (RFC 1047's case): a subject twice is allowed, no other
    assert set(subjects(stack)) == {b"before", b"while one is down", b"after"}


def subjects(stack: Compose) -> list[bytes]:
    return [m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in imap_messages(stack.ports["IMAP"])]


def try_send(stack: Compose, subject: str) -> bool:
    try:
        send(stack.ports["SMTP"], message(subject, "body"))
        return True
    except (AssertionError, OSError):
        return False
