"""Installations never mix (issue 12 §10): two whole stacks on one nats-server, each its own NATS account.

Both have the same domain and the same user; mail sent through each arrives only in its own mailbox.
Another application on the same server, with its own stream named MAIL and a durable named queue,
keeps its message, its consumer and its configuration untouched. `mailflow up` told to use a NATS
server that does not answer says so and exits 1 (it never starts one of its own instead).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import nats
import pytest

from mailflow import natsauth
from mailflow.natsserver import NatsServer
from mailflow.stack import NATS_PASSWORDS, Ports, Stack, load_secrets
from tests.e2e.test_pipeline import make_message, pop3, send
from tests.support import free_port, wait_for

FOREIGN = {"user": "other-app", "password": "n" + "1" * 32}


def own_passwords(data_dir) -> dict[str, str]:
    values = load_secrets(data_dir)
    return {service: values[var] for var, service in NATS_PASSWORDS.items()}


async def foreign_app(url: str, publish: bool) -> tuple[int, int, list[str]]:
    """Another application's stream MAIL with a durable `queue`: (messages, pending, subjects)."""
    nc = await nats.connect(url, **FOREIGN)
    try:
        js = nc.jetstream()
        if publish:
            await js.add_stream(name="MAIL", subjects=["mail.queued"])
            await js.add_consumer("MAIL", durable_name="queue", ack_policy="explicit")
            await js.publish("mail.queued", b"the other application's work")
        info = await js.stream_info("MAIL")
        consumer = await js.consumer_info("MAIL", "queue")
        return info.state.messages, consumer.num_pending, info.config.subjects
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One nats-server with the accounts of installations alpha and beta and another application's."""
    root = tmp_path_factory.mktemp("installations")
    auth: dict = {"accounts": {}}
    for name in ("alpha", "beta"):
        auth["accounts"].update(natsauth.accounts(name, own_passwords(root / name))["accounts"])
    auth["accounts"]["OTHER"] = {"jetstream": "enabled", "users": [FOREIGN]}
    server = NatsServer(root / "nats", port=free_port(), auth=auth).start()
    assert asyncio.run(foreign_app(server.url, publish=True)) == (1, 1, ["mail.queued"])
    stacks = {}
    try:
        for name in ("alpha", "beta"):
            st = stacks[name] = Stack(root / name, Ports.free(), nats_url=server.url, installation=name).start()
            st.cli("domain", "add", "example.test")
            st.cli("user", "add", "alice@example.test", "--password", "alice-pw")
        yield server, stacks
    finally:
        for st in stacks.values():
            st.stop()
        server.stop()


def subjects_in(stack: Stack) -> list[bytes]:
    p = pop3(stack, "alice@example.test", "alice-pw")
    try:
        return [
            next(line for line in p.top(n, 0)[1] if line.startswith(b"Subject:"))
            for n in range(1, p.stat()[0] + 1)
        ]
    finally:
        p.quit()


def test_two_installations_on_one_server_keep_their_mail_apart(shared):
    server, stacks = shared
    for name, st in stacks.items():
        send(st, "alice@example.test", make_message("alice@example.test", f"for {name} only"))
    for name, st in stacks.items():
        wait_for(lambda st=st: subjects_in(st), timeout=30, what=f"{name}'s mail")
    # each mailbox holds its own message, once, and nothing of the other installation
    assert subjects_in(stacks["alpha"]) == [b"Subject: for alpha only"]
    assert subjects_in(stacks["beta"]) == [b"Subject: for beta only"]
    assert asyncio.run(foreign_app(server.url, publish=False)) == (1, 1, ["mail.queued"])


def test_the_account_file_for_a_server_run_by_someone_else(shared):
    _, stacks = shared
    path = stacks["alpha"].data_dir / "nats-accounts.conf"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert '"alpha-smtp-ingress"' in text and stacks["alpha"].nats_passwords["queue"] in text


def test_up_with_a_named_nats_that_does_not_answer_stops(tmp_path):
    dead = f"nats://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env.update(MAILFLOW_NATS_URL=dead, MAILFLOW_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run(
        [sys.executable, "-m", "mailflow.cli.main", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert f"no NATS server answers at {dead}" in run.stderr
    assert not (tmp_path / "data" / "nats").exists()  # it started no server of its own
