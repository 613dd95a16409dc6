"""`mailflow status` and `mailflow queue list --offset` on the whole stack (issue 13 §9): status shows
every service ready with its version, NATS with JetStream, both databases and the queue's depth, and
exits 1 naming what is down once a service is stopped; --offset pages through the queue."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys

import httpx

from mailflow import distribution
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.services import SERVICES
from tests.support import wait_for


def delivered(stack) -> dict:
    r = httpx.get(
        stack.http_url("queue") + "/queue",
        params={"state": "delivered", "limit": 100},
        headers={ADMIN_TOKEN_HEADER: stack.admin_token},
        timeout=10,
    )
    return r.json()


def test_queue_list_pages_with_offset(stack):
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as smtp:
        for n in range(3):
            smtp.sendmail("bob@example.test", ["alice@example.test"], f"Subject: page {n}\r\n\r\nbody {n}\r\n")
    wait_for(lambda: delivered(stack)["total"] >= 3, timeout=60, interval=0.1, what="three messages delivered")
    whole = json.loads(stack.cli("queue", "list", "--state", "delivered", "--json").stdout)
    ids = [m["queue_id"] for m in whole["items"]]
    assert len(ids) == whole["total"] >= 3
    page = json.loads(stack.cli("queue", "list", "--state", "delivered", "--offset", "1", "--limit", "2", "--json").stdout)
    assert [m["queue_id"] for m in page["items"]] == ids[1:3]
    assert (page["offset"], page["limit"], page["total"]) == (1, 2, whole["total"])
    table = stack.cli("queue", "list", "--state", "delivered", "--offset", "1", "--limit", "1").stdout
    assert ids[1] in table and ids[0] not in table and "2-2 shown" in table


def test_status_shows_everything_up(stack):
    result = stack.cli("status", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"]
    assert set(report["services"]) == set(SERVICES)
    for name, s in report["services"].items():
        assert s["alive"] and s["ready"] and s["version"] == distribution.version(), (name, s)
        assert s["url"] == stack.http_url(name)
    assert report["nats"]["reachable"] and report["nats"]["jetstream"] and report["nats"]["version"]
    assert report["databases"] == {"mailbox-store": True, "queue": True}
    assert set(report["queue"]["states"]) == {"queued", "inflight", "deferred", "held", "delivered", "bounced"}
    human = stack.cli("status").stdout
    assert human.count("ready") >= len(SERVICES) and "NATS" in human and "JetStream on" in human


def test_status_exits_1_and_names_what_is_down(stack):
    stack.stop_service("delivery")
    try:
        result = stack.cli("status", "--json", check=False)
        report = json.loads(result.stdout)
        assert result.returncode == 1 and not report["ok"]
        assert not report["services"]["delivery"]["alive"] and report["services"]["delivery"]["error"]
        assert all(s["ready"] for name, s in report["services"].items() if name != "delivery")
        human = stack.cli("status", check=False)
        assert human.returncode == 1 and "down" in human.stdout
        no_token = {k: v for k, v in stack.cli_env().items() if k != "MAILFLOW_ADMIN_TOKEN"}
        no_token["MAILFLOW_DATA_DIR"] = str(stack.data_dir / "nowhere")
        out = subprocess.run(
            [sys.executable, "-m", "mailflow.cli.main", "status"], env=no_token, capture_output=True, text=True, timeout=60
        ).stdout
        assert "depth unknown: no admin token" in out
    finally:
        stack.start_service("delivery")
