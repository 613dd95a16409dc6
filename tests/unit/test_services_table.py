"""Ports and setting prefixes are defined once, in `mailflow.services` (issue 13 §4): each service's
Settings takes its prefix and listen defaults from its row; the local runner's ports, the environment
it gives each service and the `mailflow` command's addresses come from the same rows; and no other
module of the code writes a prefix or a port of the table again (read from the code's syntax tree)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from mailflow.hostport import split_hostport
from mailflow.services import DEV_OFFSET, LISTENERS, SERVICES, settings_class
from mailflow.stack import Ports, Stack

ROOT = Path(__file__).resolve().parents[2]
STANDARD = {"smtp": 25, "submission": 587, "smtps": 465, "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "managesieve": 4190, "web": 80}


def test_the_table_has_the_standard_ports_and_nothing_twice():
    assert {name: li.port for name, (_, li) in LISTENERS.items()} == STANDARD
    assert all(li.dev_port == li.port + DEV_OFFSET for _, li in LISTENERS.values())
    rows = list(SERVICES.values())
    for values in ([r.prefix for r in rows], [r.http_port for r in rows], [r.section for r in rows]):
        assert len(set(values)) == len(values)
    ports = [r.http_port for r in rows] + [li.dev_port for _, li in LISTENERS.values()]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("service", SERVICES)
def test_settings_take_prefix_and_listen_defaults_from_the_table(service, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("MAILFLOW_")]:
        monkeypatch.delenv(key)
    row, cls = SERVICES[service], settings_class(service)
    assert cls.model_config["env_prefix"] == row.prefix
    secrets = {"service_token": "t", "admin_token": "a", "session_key": "k"}  # those a service does not read are ignored
    settings = cls(**secrets)
    listens = {f for f in cls.model_fields if f.endswith("listen")}
    assert listens == {"http_listen", *(li.setting for li in row.listeners)}, "every listener is in the table"
    assert split_hostport(settings.http_listen)[1] == row.http_port
    for li in row.listeners:
        assert split_hostport(getattr(settings, li.setting)) == ("127.0.0.1", li.dev_port)
        monkeypatch.setenv(row.var(li.setting), "127.0.0.9:1")
        assert cls(**secrets).model_dump()[li.setting] == "127.0.0.9:1"


def test_the_runner_ports_and_environment_come_from_the_table(tmp_path):
    fields = {f.name for f in dataclasses.fields(Ports)}
    assert fields == {"host", "nats", "http", *LISTENERS}
    p = Ports()
    assert {name: getattr(p, name) for name in LISTENERS} == {n: li.dev_port for n, (_, li) in LISTENERS.items()}
    assert p.http == {name: row.http_port for name, row in SERVICES.items()}
    free = Ports.free()
    stack = Stack(tmp_path, free)
    for name, row in SERVICES.items():
        env = stack.environment(name)
        assert env[row.var("http_listen")] == f"127.0.0.1:{free.http[name]}"
        for li in row.listeners:
            assert env[row.var(li.setting)] == f"127.0.0.1:{getattr(free, li.name)}"
        assert {env[r.url_var] for r in SERVICES.values()} == {stack.http_url(n) for n in SERVICES}


def code_files() -> list[Path]:
    files = list((ROOT / "shared/mailflow").rglob("*.py"))
    files += [p for p in (ROOT / "services").glob("*/mailflow_*/**/*.py")]
    return [p for p in files if p.name != "services.py" or p.parent.name != "mailflow"]


def test_no_module_writes_a_prefix_or_a_port_of_the_table_again():
    prefixes = {r.prefix for r in SERVICES.values()}
    ports = {r.http_port for r in SERVICES.values()} | {li.dev_port for _, li in LISTENERS.values()}
    found = []
    for path in code_files():
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and ast.get_docstring(node) is not None
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or isinstance(node.value, bool) or id(node) in docstrings:
                continue
            value = node.value
            written = (
                (isinstance(value, str) and (value in prefixes or any(f":{p}" in value for p in ports)))
                or (isinstance(value, int) and value in ports)
            )
            if written:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value!r}")
    assert not found, "use mailflow.services instead:\n" + "\n".join(found)
