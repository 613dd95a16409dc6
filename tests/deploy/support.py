"""Reading the deployment files as the tools do: compose interpolation, Dockerfile instructions, settings.

Only what the deploy tests need: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
`${VAR?message}` and `$$` (docker compose's interpolation); a Dockerfile's instructions with their
continuation lines joined, per build stage. A malformed file raises ValueError naming the problem.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mailflow.services import SERVICES, settings_class
from mailflow.settings import env_names as _env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\})")


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name, dash, default, qmark, message = m.group(2, 3, 4, 5, 6)
        value = env.get(name)
        if dash:
            if value is None or (dash == ":-" and value == ""):
                return default
            return value
        if qmark:
            if value is None or (qmark == ":?" and value == ""):
                raise ValueError(f"{name} is required: {message}")
            return value
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(n, env) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def load_compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml with anchors merged and variables interpolated from `env`."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return _interpolate_tree(raw, env or {})


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@dataclass
class PortMapping:
    host_ip: str
    host_port: str
    container_port: int


def ports(service: dict) -> list[PortMapping]:
    out = []
    for spec in service.get("ports") or []:
        parts = str(spec).split("/")[0].split(":")
        if len(parts) == 3:
            out.append(PortMapping(parts[0], parts[1], int(parts[2])))
        elif len(parts) == 2:
            out.append(PortMapping("", parts[0], int(parts[1])))
        else:
            out.append(PortMapping("", "", int(parts[0])))
    return out


# --- Dockerfiles -----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                if not sep:
                    raise ValueError(f"line {ins.line}: use ENV key=value")
                out[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str] | None:
        found = self.all(keyword)
        if not found:
            return None
        args = found[-1].args
        if keyword == "HEALTHCHECK":
            args = args[args.index("CMD") + 3 :].strip()
        value = json.loads(args)
        if not isinstance(value, list):
            raise ValueError(f"line {found[-1].line}: {keyword} must use the JSON (exec) form")
        return value


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    logical, start = "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        logical = ""
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            raise ValueError(f"{path}:{start}: {keyword} before FROM")
        stages[-1].instructions.append(Instruction(keyword, args, start))
    if logical:
        raise ValueError(f"{path}: ends inside a continued line")
    return stages


def image_env() -> dict[str, str]:
    """The environment the image gives every container (its final stage's ENV)."""
    return parse_dockerfile(DOCKERFILE)[-1].env()


# --- settings --------------------------------------------------------------------------------------


def env_names(service: str) -> dict[str, str]:
    """{environment variable: field name} that the service's Settings reads."""
    return _env_names(settings_class(service))


def required_env(service: str) -> set[str]:
    """Variables the service cannot start without (fields with no default)."""
    names = env_names(service)
    cls = settings_class(service)
    required = {f for f, info in cls.model_fields.items() if info.is_required()}
    return {var for var, f in names.items() if f in required}


def read_by_someone(service: str) -> set[str]:
    """Variables a container of `service` may set: its Settings' and the `mailflow` command's."""
    from mailflow.cli.common import CLI_VARIABLES

    return set(env_names(service)) | set(CLI_VARIABLES)


__all__ = ["SERVICES", "settings_class"]


def rspamd_conf(path: str, key: str) -> str:
    """`key = "value";` from a file of deploy/rspamd (the configuration the rspamd image copies)."""
    for line in (ROOT / "deploy/rspamd" / path).read_text().splitlines():
        name, eq, value = line.partition("=")
        if eq and name.strip() == key:
            return value.strip().rstrip(";").strip('"')
    raise AssertionError(f"{key} not in deploy/rspamd/{path}")
