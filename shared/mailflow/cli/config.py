"""`mailflow config check`: the settings each service would run with, and everything wrong with them.

Builds every service's Settings from this environment and the configuration file (MAILFLOW_CONFIG or
`mailflow --config`), the way the service itself does, and prints each value with where it came
from (env, file, default). Secrets show as `****`, and so does the password in a URL. Then it lists
every problem at once: the file's (unreadable, not TOML, a table or key that no setting reads) and
each service's validation errors (a required secret missing, a malformed value), a problem common to
several services once with their names. Unknown MAILFLOW_* variables in the environment are warnings.
Exit 0 when there is no problem, 1 otherwise.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import SecretStr, ValidationError
from rich.markup import escape
from rich.table import Table

from mailflow import configfile
from mailflow.certs.settings import Settings as RenewerSettings  # read by `python -m mailflow.certs`
from mailflow.cli.common import CLI_VARIABLES, JSON, console, print_json
from mailflow.cli.up import ServiceName
from mailflow.services import SERVICES, settings_class
from mailflow.settings import ServiceSettings, env_names

app = typer.Typer(help="Check the configuration: environment and file (MAILFLOW_CONFIG).", no_args_is_help=True)

MASK = "****"
COMMON = "every service"
# Read by other programs than the services: the test suites, the runner, this command.
OTHERS = (configfile.ENV_VAR, "MAILFLOW_INSTANCE", *CLI_VARIABLES)


def mask(value: Any) -> Any:
    """A secret's value as `****`, a URL's password too; anything else as it is."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as the environment writes it
    if isinstance(value, str) and "://" in value and "@" in value:
        parts = urlsplit(value)
        if parts.password:
            netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
            netloc += f":{parts.port}" if parts.port else ""
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def _origin(var: str, file_values: dict[str, str]) -> str:
    if var in os.environ:
        return "env"
    return "file" if var in file_values else "default"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _build(cls: type, file_values: dict[str, str]) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """({variable: {value, from}}, [(variable, error)]) of one Settings class. A field in error shows
    "(error)"; the others show their values, so one mistake hides nothing else."""
    field_of = env_names(cls)
    var_of = {f: var for var, f in field_of.items()}
    errors: list[tuple[str, str]] = []
    bad: set[str] = set()
    try:
        with configfile.tolerant():
            built = cls()
    except ValidationError as exc:
        for e in exc.errors():
            key = str(e["loc"][0]) if e["loc"] else "?"
            field = field_of.get(key, key)
            info = cls.model_fields.get(field)
            quiet = e["type"] == "missing" or info is None or _is_secret(info.annotation)
            errors.append((var_of.get(field, key), e["msg"] + ("" if quiet else f" (given: {e.get('input')!r})")))
            bad.add(field)
        # again with a stand-in for each field in error, to show the values of all the others
        stand_in = {f: "" if cls.model_fields[f].is_required() else cls.model_fields[f].default for f in bad if f in cls.model_fields}
        try:
            with configfile.tolerant():
                built = cls(**stand_in)
        except ValidationError:
            return {}, errors
    values = {
        var_of[f]: {"value": "(error)" if f in bad else mask(getattr(built, f)), "from": _origin(var_of[f], file_values)}
        for f in cls.model_fields
    }
    return values, errors


def _unknown(names: set[str], file_values: dict[str, str]) -> tuple[list[str], list[str]]:
    """(errors for file keys no setting reads, warnings for such MAILFLOW_* variables)."""
    by_section = {row.prefix: row.section for row in SERVICES.values()}

    def where(var: str) -> str:
        for prefix, section in by_section.items():
            if var.startswith(prefix):
                return f"[{section}] {var[len(prefix):].lower()}"
        return var.removeprefix("MAILFLOW_").lower()

    def hint(var: str) -> str:
        close = difflib.get_close_matches(var, names, n=1)
        return f" (did you mean {where(close[0])}, {close[0]}?)" if close else ""

    errors = [
        f"{configfile.path()}: {where(var)}: no setting reads {var}{hint(var)}"
        for var in sorted(file_values)
        if var not in names
    ]
    warnings = [
        f"{var} is set but no setting reads it{hint(var)}"
        for var in sorted(os.environ)
        if var.startswith("MAILFLOW_") and var not in names and not var.startswith("MAILFLOW_TEST_")
    ]
    return errors, warnings


def _table(title: str, values: dict[str, dict]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", no_wrap=True)
    for var, v in values.items():
        value = v["value"]
        table.add_row(var, escape("(none)" if value is None else str(value)), v["from"])
    return table


@app.command("check")
def check(
    service: ServiceName | None = typer.Option(
        None, "--service", help="Only this service (all of its settings, the common ones included)."
    ),
    as_json: bool = JSON,
) -> None:
    """Print the effective settings (secrets masked) and every error, then exit 1 if there was one."""
    file_values, problems = configfile.read()
    classes = {name: settings_class(name) for name in SERVICES}
    names = {var for cls in (*classes.values(), RenewerSettings) for var in env_names(cls)} | set(OTHERS)
    unknown, warnings = _unknown(names, file_values)
    problems += unknown

    common = set(ServiceSettings.model_fields)
    shown: dict[str, dict[str, dict]] = {}
    failures: dict[tuple[str, str], list[str]] = {}
    for name in [service.value] if service else SERVICES:
        cls = classes[name]
        values, errors = _build(cls, file_values)
        own = {f for f in cls.model_fields if f not in common or f in cls.__annotations__}
        own_vars = {var for var, f in env_names(cls).items() if f in own}
        if service:
            shown[name] = values
        else:
            shown.setdefault(COMMON, {}).update({k: v for k, v in values.items() if k not in own_vars})
            shown[name] = {k: v for k, v in values.items() if k in own_vars}
        for error in errors:
            failures.setdefault(error, []).append(name)
    problems += [f"{var}: {msg} [{', '.join(who)}]" for (var, msg), who in failures.items()]

    if as_json:
        print_json(
            {"file": str(configfile.path() or ""), "settings": shown, "errors": problems, "warnings": warnings}
        )
        raise typer.Exit(1 if problems else 0)
    console.print(f"configuration file: {configfile.path() or '(none: MAILFLOW_CONFIG is not set)'}")
    for title, values in shown.items():
        if values:
            console.print(_table(title, values))
    for w in warnings:
        console.print(f"[yellow]warning[/]: {escape(w)}", soft_wrap=True)
    for p in problems:
        console.print(f"[red]error[/]: {escape(p)}", soft_wrap=True)
    console.print(f"{len(problems)} error(s)" if problems else "[green]no errors[/]")
    raise typer.Exit(1 if problems else 0)
