"""The NATS users are written once (contracts/permissions.py): the generated server configurations in the
repository are in sync with that table, nats-server accepts them with passwords as deploy/compose/secrets.sh
and `mailflow up` make them, and every service has exactly one row."""

from __future__ import annotations

import os
import subprocess

from mailflow import natsauth
from mailflow.contracts.permissions import GRANTS, grant
from mailflow.natsserver import find_binary
from mailflow.services import SERVICES


def test_generated_files_are_in_sync_with_the_table():
    assert natsauth.stale() == [], "run .venv/bin/python -m mailflow.natsauth"
    assert natsauth.main(["--check"]) == 0


def test_every_service_has_one_row_and_its_own_inbox():
    assert set(GRANTS) == set(SERVICES)
    for service in SERVICES:
        assert grant(service).subscribe[-1] == f"_INBOX.{service}.>"
        assert not any(s.startswith("_INBOX") for s in grant(service).publish)  # replies: allow_responses only


def test_nats_server_accepts_the_compose_configuration_with_generated_passwords(tmp_path):
    env_file = tmp_path / ".env"
    subprocess.run(["bash", str(natsauth.ROOT / "deploy/compose/secrets.sh"), str(env_file)], check=True, capture_output=True)
    passwords = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    conf = tmp_path / "nats.conf"
    conf.write_text(natsauth.compose_conf().replace('"/data"', f'"{tmp_path}"'))
    for attempt in range(20):  # twenty sets of passwords: none may read as anything but a string
        env = {**os.environ, **{natsauth.password_var(s): passwords[natsauth.password_var(s)] for s in SERVICES}}
        if attempt:
            env.update({natsauth.password_var(s): natsauth.new_password() for s in SERVICES})
        check = subprocess.run([find_binary(), "-c", str(conf), "-t"], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
