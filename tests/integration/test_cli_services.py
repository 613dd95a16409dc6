"""The `mailflow` command against real services (issue 13 §9): the destructive admin commands ask first
and a "no" leaves everything as it was; `mailflow serve <service>` becomes that service (same process,
the version in its /healthz, a clean exit on SIGTERM), configured by a TOML file through `--config`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailflow import distribution
from mailflow.cli.main import app
from mailflow.stack import Ports, Stack
from tests.support import free_port, wait_for

MAILFLOW = Path(sys.executable).with_name("mailflow")


class Cli:
    """`mailflow ...` in this process (typer's runner) against a stack with only the store."""

    def __init__(self, st: Stack):
        self.env = {**st.cli_env(), "COLUMNS": "200"}

    def cli(self, *args: str, input: str | None = None, check: bool = True):
        result = CliRunner().invoke(app, list(args), input=input, env=self.env)
        assert not check or result.exit_code == 0, (args, result.output)
        return result


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("store"), Ports.free(), services=("mailbox-store",)) as st:
        yield Cli(st)


def listed(st: Cli, what: str) -> list[str]:
    key = {"domain": "name", "user": "address", "alias": "address"}[what]
    return [item[key] for item in json.loads(st.cli(what, "list", "--json").output)]


def test_deleting_asks_and_a_no_keeps_everything(store):
    store.cli("domain", "add", "ask.test")
    store.cli("user", "add", "carol@ask.test", "--password", "pw")
    store.cli("alias", "add", "info@ask.test", "carol@ask.test")
    for args, what, name in (
        (("alias", "del", "info@ask.test"), "alias", "info@ask.test"),
        (("user", "del", "carol@ask.test"), "user", "carol@ask.test"),
        (("domain", "del", "ask.test"), "domain", "ask.test"),
    ):
        for answer in ("n\n", ""):
            refused = store.cli(*args, input=answer, check=False)
            assert refused.exit_code == 1 and "nothing done" in refused.output, refused.output
            assert name in listed(store, what)
        assert "deleted" in store.cli(*args, input="y\n").output
        assert name not in listed(store, what)


def test_yes_deletes_without_asking(store):
    store.cli("domain", "add", "gone.test")
    store.cli("user", "add", "dan@gone.test", "--password", "pw")
    refused = store.cli("domain", "del", "gone.test", "--yes", check=False)
    assert refused.exit_code == 1 and "users" in refused.output, "a domain with users needs --force"
    done = store.cli("domain", "del", "gone.test", "--force", "--yes")
    assert "deleted" in done.output and "?" not in done.output
    assert "gone.test" not in listed(store, "domain")


def test_serve_becomes_the_service_configured_by_a_file(tmp_path, nats_url):
    port = free_port()
    config = tmp_path / "mailflow.toml"
    config.write_text(f'nats_url = "{nats_url}"\nservice_token = "t"\n\n[resolver]\nhttp_listen = "127.0.0.1:{port}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    proc = subprocess.Popen(
        [str(MAILFLOW), "--config", str(config), "serve", "resolver"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def health():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return json.loads(r.read())
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                return None

        body = wait_for(health, timeout=30, interval=0.1, what="resolver /healthz")
        assert body == {"service": "resolver", "status": "ok", "version": distribution.version(), "instance": socket.gethostname()}
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"-m" in argv and b"mailflow_resolver" in argv, "the same process became the service"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
