"""The configuration file: TOML with the environment's names, for those who prefer a file to variables.

The file is the one MAILFLOW_CONFIG names (`mailflow --config PATH` sets it). Keys at the top are the
settings common to every service (MAILFLOW_<KEY>); a table per service holds that service's settings,
named as its environment prefix is (MAILFLOW_SMTP_ -> [smtp], MAILFLOW_STORE_ -> [store]):

    hostname = "mail.example.com"             # MAILFLOW_HOSTNAME
    nats_url = "nats://nats:4222"             # MAILFLOW_NATS_URL

    [smtp]
    listen = "0.0.0.0:25"                     # MAILFLOW_SMTP_LISTEN
    max_message_bytes = 52428800              # MAILFLOW_SMTP_MAX_MESSAGE_BYTES

    [store]
    database_url = "postgresql+psycopg://mailflow@db/mailflow_store"

A value means what the same text in the environment means (25 -> "25", true -> "true", an array ->
its JSON), and a variable that is set wins over the file. A faulty file raises ConfigError naming the
file and every problem: unreadable, not TOML, a table that is no service's, a table inside a table, so
no service starts on it. Keys no setting reads are found by `mailflow config check`, which knows every
service's settings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from mailflow.services import SERVICES

ENV_VAR = "MAILFLOW_CONFIG"
SECTIONS = {s.section: s for s in SERVICES.values()}


class ConfigError(ValueError):
    pass


def path() -> Path | None:
    value = os.environ.get(ENV_VAR, "")
    return Path(value) if value else None


def _text(value: object) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case str():
            return value
        case int() | float():
            return str(value)
        case dt.date() | dt.time():
            return value.isoformat()
        case list():
            return json.dumps(value, default=str)
        case _:
            raise TypeError("a table is not a setting (only one level of [table])")


def parse(text: str, source: str = "<config>") -> tuple[dict[str, str], list[str]]:
    """({MAILFLOW_VARIABLE: value as the environment would hold it}, every problem) of a file's text.
    The values are those of the well-formed part; a file that is not TOML has none."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{source}: not valid TOML: {e}"]
    out: dict[str, str] = {}
    problems: list[str] = []

    def put(var: str, value: object, where: str) -> None:
        try:
            out[var] = _text(value)
        except TypeError as e:
            problems.append(f"{source}: {where}: {e}")

    for key, value in doc.items():
        if not isinstance(value, dict):
            put(f"MAILFLOW_{key.upper()}", value, key)
            continue
        service = SECTIONS.get(key)
        if service is None:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            problems.append(f"{source}: [{key}] is no service's table (they are {known})")
            continue
        for name, inner in value.items():
            put(service.var(name), inner, f"[{key}] {name}")
    return out, problems


@lru_cache(maxsize=4)
def _load(file: Path, mtime_ns: int) -> tuple[dict[str, str], tuple[str, ...]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return {}, (f"{ENV_VAR}={file}: cannot read it: {e}",)
    values, problems = parse(text, str(file))
    return values, tuple(problems)


def read() -> tuple[dict[str, str], list[str]]:
    """The file's settings and its problems, without raising ({} and [] when MAILFLOW_CONFIG is unset)."""
    file = path()
    if file is None:
        return {}, []
    try:
        mtime = file.stat().st_mtime_ns
    except OSError as e:
        return {}, [f"{ENV_VAR}={file}: cannot read it: {e.strerror}"]
    values, problems = _load(file, mtime)
    return dict(values), list(problems)


_tolerant: ContextVar[bool] = ContextVar("tolerant", default=False)


@contextmanager
def tolerant():
    """Within it, values() gives a faulty file's well-formed part instead of raising (`config check`
    lists the file's problems and still checks every setting)."""
    token = _tolerant.set(True)
    try:
        yield
    finally:
        _tolerant.reset(token)


def values() -> dict[str, str]:
    """The file's settings ({} when MAILFLOW_CONFIG is unset), re-read when the file changes.
    ConfigError listing every problem of a faulty file."""
    found, problems = read()
    if problems and not _tolerant.get():
        raise ConfigError("\n".join(problems))
    return found


def lookup(name: str) -> str | None:
    """A setting's raw value as a service would see it: the environment, else the file, else None."""
    value = os.environ.get(name)
    return value if value is not None else values().get(name)
