"""Print the settings of every Mailflow service as Markdown tables, read from the Settings classes.

    .venv/bin/python deploy/settings_table.py            # print
    .venv/bin/python deploy/settings_table.py --write    # refresh the tables in deploy/README.md

For each field: the environment variable(s), the default (secrets show "required"), and the comment
written beside the field (or just above it) in the service's settings.py. The tables in the README sit
between the markers <!-- settings:begin --> and <!-- settings:end -->; --write replaces only that part
and fails if the markers are missing.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic_core import PydanticUndefined

from mailflow.services import SERVICES, settings_class
from mailflow.settings import FileSettings, ServiceSettings

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
FIELD = re.compile(r"^\s{4}(\w+)\s*:")


def comments(cls) -> dict[str, str]:
    """{field: the comment beside it, or the comment lines just above it} from the class source."""
    found: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").rstrip())
            continue
        m = FIELD.match(line)
        if m:
            _, _, beside = line.partition("  #")
            text = beside.strip() if beside else " ".join(above)
            found[m.group(1)] = text
        above = []
    return found


def env_var(cls, name: str, info) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return " / ".join(c for c in alias.choices if isinstance(c, str))
    prefix = cls.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def default(info) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, SecretStr):
        return "(secret)"
    if value is None or value == "":
        return "(empty)"
    return str(value)


def table(title: str, rows: list[tuple[str, str, str]]) -> str:
    lines = [f"#### {title}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
    for var, dflt, text in rows:
        cell = text.replace("|", "\\|")
        lines.append(f"| `{var}` | `{dflt}` | {cell} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    common_fields = set(ServiceSettings.model_fields)
    base_comments = {**comments(FileSettings), **comments(ServiceSettings)}
    parts = [
        table(
            "Every service (unprefixed)",
            [
                (env_var(ServiceSettings, f, i), default(i), base_comments.get(f, ""))
                for f, i in ServiceSettings.model_fields.items()
                if f != "http_listen"
            ],
        )
    ]
    for service in SERVICES:
        cls = settings_class(service)
        text = {**base_comments, **comments(cls)}
        rows = [
            (env_var(cls, f, i), default(i), text.get(f, ""))
            for f, i in cls.model_fields.items()
            if f not in common_fields or f in cls.__annotations__
        ]
        parts.append(table(f"{service} (`{cls.model_config.get('env_prefix')}*`)", rows))
    parts.append(renewer_table())
    return "\n".join(parts)


def renewer_table() -> str:
    """The certificate renewer (`python -m mailflow.certs`), which is no service but reads the same way."""
    from mailflow.certs.settings import Settings

    text = {**comments(FileSettings), **comments(ServiceSettings), **comments(Settings)}
    rows = [
        (env_var(Settings, f, i), default(i), text.get(f, ""))
        for f, i in Settings.model_fields.items()
        if not isinstance(i.validation_alias, AliasChoices)  # the common ones are in the first table
    ]
    return table(f"certificate renewer, `python -m mailflow.certs` (`{Settings.model_config.get('env_prefix')}*`)", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"refresh the tables in {README}")
    args = parser.parse_args(argv)
    tables = render()
    if not args.write:
        print(tables)
        return 0
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"{README} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}")
    print(f"refreshed the settings tables in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
