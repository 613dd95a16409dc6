"""The `mailflow` command: `mailflow --help` lists everything, `mailflow <command> --help` explains one.

Shell completion: `mailflow --install-completion` (bash, zsh, fish, PowerShell; then open a new shell),
or `mailflow --show-completion` to see the script. `--config PATH` reads settings from a TOML file
(the same as MAILFLOW_CONFIG=PATH; see `mailflow.configfile`), for this command and the services it
starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from mailflow import configfile, distribution
from mailflow.cli import config, dead, dkim, dns, queue
from mailflow.cli.admin import alias_app, domain_app, user_app
from mailflow.cli.common import err
from mailflow.cli.status import status
from mailflow.cli.up import serve, up

app = typer.Typer(no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailflow {distribution.version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config_file: Path | None = typer.Option(
        None,
        "--config",
        help=f"A TOML settings file, the same as {configfile.ENV_VAR}=PATH (the environment wins over it).",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Mailflow: run a mail system and administer it."""
    if config_file is not None:
        os.environ[configfile.ENV_VAR] = str(config_file.resolve())
    if ctx.invoked_subcommand != "config":  # which lists a faulty file's problems with the rest
        try:
            configfile.values()
        except configfile.ConfigError as exc:
            err.print(f"[red]configuration file[/]: {escape(str(exc))}")
            raise typer.Exit(2) from None


app.command("up")(up)
app.command("serve")(serve)
app.command("status")(status)
app.add_typer(config.app, name="config")
app.add_typer(domain_app, name="domain")
app.add_typer(user_app, name="user")
app.add_typer(alias_app, name="alias")
app.add_typer(dkim.app, name="dkim")
app.add_typer(dns.app, name="dns")
app.add_typer(queue.app, name="queue")
app.add_typer(dead.app, name="dead")
app.command("trace")(queue.trace)


if __name__ == "__main__":
    app()
