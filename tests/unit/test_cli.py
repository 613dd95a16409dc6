"""The `mailflow` command fits an operator's habits (issue 13 §9): help on every command and parameter,
shell completion, `--version` from the package metadata, a distribution name not taken on PyPI, and
questions before destroying anything (the answers against a real store: tests/integration)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mailflow import distribution
from mailflow.cli.main import app

MAILFLOW = Path(sys.executable).with_name("mailflow")
BUILTIN = {"help", "install_completion", "show_completion"}


def commands(command, path=("mailflow",)):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_every_command_and_parameter_has_help():
    missing = []
    for path, command in commands(typer.main.get_command(app)):
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            if param.name not in BUILTIN and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {param.name}")
    assert not missing, f"no help text: {missing}"


def test_version_comes_from_the_distribution_metadata():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"mailflow {metadata.version(distribution.name())}\n"


def test_the_distribution_is_not_the_name_taken_on_pypi_and_installs_the_command():
    dist = metadata.distribution(distribution.name())
    assert dist.name != "mailflow", "'mailflow' belongs to someone else on PyPI"
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"mailflow": "mailflow.cli.main:app"}


def complete(*words: str) -> list[str]:
    env = {**os.environ, "_MAILFLOW_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words), "COMP_CWORD": str(len(words) - 1)}
    proc = subprocess.run([str(MAILFLOW)], env=env, capture_output=True, text=True, timeout=60)
    return proc.stdout.split()


def test_shell_completion_is_on():
    # typer detects the shell it runs under (make's sh is not one it completes); its test switch takes one
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = subprocess.run([str(MAILFLOW), "--show-completion", "bash"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "complete -o default -F _mailflow_completion mailflow" in proc.stdout
    assert complete("mailflow", "qu") == ["queue"]
    assert complete("mailflow", "serve", "imap") == ["imap-pop3"]
    assert complete("mailflow", "queue", "li") == ["list"]


def test_serve_names_the_services_it_knows():
    result = CliRunner().invoke(app, ["serve", "postfix"])
    assert result.exit_code == 2
    assert "smtp-ingress" in result.output and "imap-pop3" in result.output


@pytest.mark.parametrize(
    "args",
    [["domain", "del", "example.test"], ["user", "del", "a@example.test"], ["alias", "del", "b@example.test"], ["queue", "delete", "Q1"], ["dead", "delete", "7"]],
)
def test_destructive_commands_ask_and_do_nothing_without_a_yes(args):
    """The services are not even asked: their addresses answer nothing (a request would exit 2)."""
    env = {"MAILFLOW_STORE_URL": "http://127.0.0.1:9", "MAILFLOW_QUEUE_URL": "http://127.0.0.1:9", "MAILFLOW_ADMIN_TOKEN": "t"}
    for answer in ("n\n", "", "\n"):
        result = CliRunner().invoke(app, args, input=answer, env=env)
        assert result.exit_code == 1 and "nothing done" in result.output, (args, answer, result.output)
        assert "[y/N]" in result.output
    result = CliRunner().invoke(app, [*args, "--yes"], env=env)
    assert result.exit_code == 2 and "did not answer" in result.output, "with --yes it goes ahead"
    result = CliRunner().invoke(app, args, input="y\n", env=env)
    assert result.exit_code == 2 and "did not answer" in result.output, "and with a yes"
