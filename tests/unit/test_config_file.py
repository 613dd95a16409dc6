"""The configuration file (issue 13 §9): TOML with the environment's names, read by every service's
Settings under the environment, and `mailflow config check`, which shows the effective settings with
secrets masked and lists every error at once."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from mailflow import configfile
from mailflow.cli.main import app
from mailflow.services import SERVICES, settings_class

FILE = """\
hostname = "mail.file.test"          # MAILFLOW_HOSTNAME
service_token = "token-from-file"

[smtp]
listen = "0.0.0.0:2525"
max_recipients = 50
require_tls_for_auth = false
proxy_trusted = "10.0.0.0/8"

[store]
database_url = "postgresql+psycopg://mailflow:pg-secret@db:5432/mailflow_store"
"""


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MAILFLOW_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def config(tmp_path, clean_env):
    path = tmp_path / "mailflow.toml"
    path.write_text(FILE)
    clean_env.setenv("MAILFLOW_CONFIG", str(path))
    return path


def test_tables_and_keys_map_to_the_environment_names():
    values, problems = configfile.parse('numbers = [1, 2]\nwhen = 2026-01-02\n' + FILE)
    assert problems == []
    assert values == {
        "MAILFLOW_HOSTNAME": "mail.file.test",
        "MAILFLOW_SERVICE_TOKEN": "token-from-file",
        "MAILFLOW_SMTP_LISTEN": "0.0.0.0:2525",
        "MAILFLOW_SMTP_MAX_RECIPIENTS": "50",
        "MAILFLOW_SMTP_REQUIRE_TLS_FOR_AUTH": "false",
        "MAILFLOW_SMTP_PROXY_TRUSTED": "10.0.0.0/8",
        "MAILFLOW_STORE_DATABASE_URL": "postgresql+psycopg://mailflow:pg-secret@db:5432/mailflow_store",
        "MAILFLOW_NUMBERS": "[1, 2]",
        "MAILFLOW_WHEN": "2026-01-02",
    }
    assert {row.section for row in SERVICES.values()} == {"smtp", "queue", "resolver", "delivery", "store", "imap", "web"}


def test_every_problem_of_a_file_is_named_at_once():
    _, problems = configfile.parse('[smpt]\nlisten = "x"\n[smtp.tls]\nx = 1\n[delivery]\nlanes = 2\n', "m.toml")
    assert problems == [
        "m.toml: [smpt] is no service's table (they are [store], [resolver], [queue], [delivery], [smtp], [imap], [web])",
        "m.toml: [smtp] tls: a table is not a setting (only one level of [table])",
    ]
    values, problems = configfile.parse('listen = "unclosed\n', "bad.toml")
    assert values == {} and problems[0].startswith("bad.toml: not valid TOML")


def test_the_environment_wins_over_the_file_which_wins_over_the_defaults(config, clean_env):
    smtp = settings_class("smtp-ingress")
    s = smtp()
    assert s.listen == "0.0.0.0:2525" and s.max_recipients == 50 and s.require_tls_for_auth is False
    assert s.hostname == "mail.file.test" and s.service_token.get_secret_value() == "token-from-file"
    assert s.max_command_line == smtp.model_fields["max_command_line"].default
    clean_env.setenv("MAILFLOW_SMTP_MAX_RECIPIENTS", "7")
    clean_env.setenv("MAILFLOW_HOSTNAME", "mail.env.test")
    s = smtp()
    assert (s.max_recipients, s.hostname, s.listen) == (7, "mail.env.test", "0.0.0.0:2525")
    assert smtp(max_recipients=3).max_recipients == 3, "arguments (tests) win over both"
    store = settings_class("mailbox-store")(admin_token="a", session_key="k")
    assert store.database_url.endswith("@db:5432/mailflow_store") and store.hostname == "mail.env.test"


def test_the_file_is_read_again_when_it_changes(config):
    assert configfile.lookup("MAILFLOW_SMTP_LISTEN") == "0.0.0.0:2525"
    config.write_text('[smtp]\nlisten = "0.0.0.0:2626"\n# a longer file: another size\n')
    os.utime(config, ns=(1, 1))
    assert configfile.lookup("MAILFLOW_SMTP_LISTEN") == "0.0.0.0:2626"


def test_a_service_refuses_a_faulty_file(tmp_path, clean_env):
    path = tmp_path / "bad.toml"
    path.write_text('[smpt]\nlisten = "x"\n[imap.limits]\nx = 1\n')
    clean_env.setenv("MAILFLOW_CONFIG", str(path))
    with pytest.raises(configfile.ConfigError) as caught:
        settings_class("resolver")(service_token="t")
    assert "[smpt]" in str(caught.value) and "[imap] limits" in str(caught.value)
    clean_env.setenv("MAILFLOW_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(configfile.ConfigError, match="missing.toml: cannot read it"):
        settings_class("resolver")(service_token="t")


def check(*args: str) -> tuple[int, str]:
    # the runner puts back what it is given: `--config` sets MAILFLOW_CONFIG in this process
    env = {"COLUMNS": "200", configfile.ENV_VAR: os.environ.get(configfile.ENV_VAR)}
    result = CliRunner().invoke(app, [*args], env=env)
    return result.exit_code, result.output


def test_config_check_shows_effective_settings_with_their_origin_and_masks_secrets(config, clean_env):
    clean_env.setenv("MAILFLOW_ADMIN_TOKEN", "admin-from-env")
    clean_env.setenv("MAILFLOW_SESSION_KEY", "session-key-from-env")
    clean_env.setenv("MAILFLOW_WEB_SESSION_KEY", "web-session-key-from-env")
    clean_env.setenv("MAILFLOW_SMTP_MAX_RECIPIENTS", "7")
    code, out = check("config", "check")
    assert code == 0, out
    assert "no errors" in out and f"configuration file: {config}" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 4}
    assert "0.0.0.0:2525" in lines["MAILFLOW_SMTP_LISTEN"] and "file" in lines["MAILFLOW_SMTP_LISTEN"]
    assert "7" in lines["MAILFLOW_SMTP_MAX_RECIPIENTS"] and "env" in lines["MAILFLOW_SMTP_MAX_RECIPIENTS"]
    assert "default" in lines["MAILFLOW_SMTP_BACKLOG"]
    assert "****" in lines["MAILFLOW_SERVICE_TOKEN"] and "****" in lines["MAILFLOW_ADMIN_TOKEN"]
    assert "mailflow:****@db:5432" in lines["MAILFLOW_STORE_DATABASE_URL"]
    assert "****" in lines["MAILFLOW_SESSION_KEY"]
    for secret in ("token-from-file", "admin-from-env", "session-key-from-env", "pg-secret"):
        assert secret not in out
    code, out = check("config", "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["errors"] == [] and report["file"] == str(config)
    assert set(report["settings"]) == {"every service", *SERVICES}
    assert report["settings"]["smtp-ingress"]["MAILFLOW_SMTP_LISTEN"] == {"value": "0.0.0.0:2525", "from": "file"}
    assert report["settings"]["every service"]["MAILFLOW_SERVICE_TOKEN"] == {"value": "****", "from": "file"}


def test_config_check_for_one_service_shows_the_common_settings_too(config, clean_env):
    """(The resolver needs no secret but the service token, which the file gives.)"""
    code, out = check("config", "check", "--service", "resolver", "--json")
    report = json.loads(out)
    assert code == 0, out
    assert list(report["settings"]) == ["resolver"]
    assert {"MAILFLOW_HOSTNAME", "MAILFLOW_RESOLVER_NAMESERVERS"} <= set(report["settings"]["resolver"])


def test_config_check_lists_every_error_at_once(tmp_path, clean_env):
    path = tmp_path / "mailflow.toml"
    path.write_text(
        '[smtp]\nlisen = "0.0.0.0:25"\nmax_recipients = "many"\n[smpt]\nx = 1\n[queue]\nfirst_retry_s = 60\n'
    )
    clean_env.setenv("MAILFLOW_IMAP_IDLE_TIMEOUT", "soon")
    clean_env.setenv("MAILFLOW_SMTP_LISTN", "typo")
    code, out = check("--config", str(path), "config", "check", "--json")
    assert code == 1
    report = json.loads(out)
    errors = "\n".join(report["errors"])
    assert "[smpt] is no service's table" in errors
    assert "[smtp] lisen: no setting reads MAILFLOW_SMTP_LISEN (did you mean [smtp] listen" in errors
    assert "MAILFLOW_SMTP_MAX_RECIPIENTS: Input should be a valid integer" in errors and "'many'" in errors
    assert "MAILFLOW_IMAP_IDLE_TIMEOUT: Input should be a valid number" in errors
    assert "MAILFLOW_SERVICE_TOKEN: Field required [mailbox-store, resolver, queue, delivery, smtp-ingress, imap-pop3, web]" in errors
    assert "MAILFLOW_ADMIN_TOKEN: Field required [mailbox-store, queue, web]" in errors
    assert "MAILFLOW_SESSION_KEY: Field required [mailbox-store]" in errors
    assert "MAILFLOW_WEB_SESSION_KEY: Field required [web]" in errors
    assert len(report["errors"]) == 8, report["errors"]
    assert any("MAILFLOW_SMTP_LISTN is set but no setting reads it" in w for w in report["warnings"])
    # the good part of the faulty file still counts, and so do the other services' settings
    assert report["settings"]["queue"]["MAILFLOW_QUEUE_FIRST_RETRY_S"] == {"value": 60.0, "from": "file"}
    assert report["settings"]["smtp-ingress"]["MAILFLOW_SMTP_MAX_RECIPIENTS"]["value"] == "(error)"
    code, out = check("--config", str(path), "config", "check")
    assert code == 1 and "8 error(s)" in out and "[smpt]" in out


def test_the_local_runner_follows_the_file(config, clean_env, tmp_path):
    """`mailflow --config FILE up`: its ports and settings reach the services, and so do its secrets."""
    from mailflow.cli.up import configured_ports
    from mailflow.stack import Stack

    config.write_text(
        FILE + '\n[imap]\npop3_listen = "127.0.0.1:3110"\nhttp_listen = "127.0.0.1:3086"\n'
        + '\n[queue]\ndatabase_url = "sqlite:////srv/queue.db"\n'
    )
    clean_env.setenv("MAILFLOW_IMAP_LISTEN", "127.0.0.1:3143")
    ports = configured_ports()
    assert (ports.smtp, ports.pop3, ports.imap, ports.http["imap-pop3"]) == (2525, 3110, 3143, 3086)
    assert ports.imaps == SERVICES["imap-pop3"].listeners[1].dev_port
    stack = Stack(tmp_path / "data", ports)
    stack.prepare()
    assert stack.service_token == "token-from-file"
    env = stack.environment("queue")
    assert env["MAILFLOW_QUEUE_DATABASE_URL"] == "sqlite:////srv/queue.db"
    assert env["MAILFLOW_SERVICE_TOKEN"] == "token-from-file" and env["MAILFLOW_CONFIG"] == str(config)
    assert stack.environment("imap-pop3")["MAILFLOW_IMAP_POP3_LISTEN"] == "127.0.0.1:3110"


def test_other_commands_stop_on_a_faulty_file(tmp_path, clean_env):
    path = tmp_path / "bad.toml"
    path.write_text("[smpt]\nx = 1\n")
    code, out = check("--config", str(path), "domain", "list")
    assert code == 2 and "[smpt] is no service's table" in out
