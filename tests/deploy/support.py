"""Reading the deployment files as the tools do: compose interpolation, Dockerfile instructions, settings;
and running the compose stack for real (`Compose`, for the tests `make test-compose` runs).

Only what the deploy tests need: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
`${VAR?message}` and `$$` (docker compose's interpolation); a Dockerfile's instructions with their
continuation lines joined, per build stage. A malformed file raises ValueError naming the problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mailflow.services import SERVICES, settings_class
from mailflow.settings import env_names as _env_names
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TEST_DNS_FILE = Path(__file__).with_name("compose-test-dns.yml")  # the resolver's DNS: NXDOMAIN to all, nothing else asked
# Every port docker-compose.yml publishes (MAILFLOW_PUBLISH_<name>); each Compose project gets free ones.
PUBLISHED = ("SMTP", "SUBMISSION", "SMTPS", "HTTPS", "IMAP", "IMAPS", "POP3", "POP3S", "ACME_HTTP", "ACME_TLS")

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


# --- docker compose for real -----------------------------------------------------------------------


def made_secrets() -> dict[str, str]:
    """The secrets as an operator makes them (deploy/compose/secrets.sh), for this project alone."""
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / ".env"
        subprocess.run(["bash", str(ROOT / "deploy/compose/secrets.sh"), str(env_file)], check=True, capture_output=True)
        return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


class Compose:
    """docker-compose (v1) or `docker compose` (v2) for one project with its own environment: its own
    name, free loopback ports for everything published (`ports`), the secrets secrets.sh makes, the
    resolver on compose-test-dns.yml; `overlays` (more -f files), `profiles` and `env` on top."""

    def __init__(self, overlays: Sequence[Path] = (), profiles: Sequence[str] = (), env: dict[str, str] | None = None):
        self.project = f"mailflowtest{secrets.token_hex(3)}"
        self.ports = {name: free_port() for name in PUBLISHED}
        self.files = [COMPOSE_FILE, TEST_DNS_FILE, *overlays]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "COMPOSE_PROJECT_NAME": self.project,
            "COMPOSE_PROFILES": ",".join(profiles),
            **made_secrets(),
            "MAILFLOW_RESOLVER_NAMESERVERS": "127.0.0.1:5353",  # compose-test-dns.yml: NXDOMAIN to all
            **{f"MAILFLOW_PUBLISH_{name}": str(port) for name, port in self.ports.items()},
            **(env or {}),
        }
        if shutil.which("docker-compose"):
            self.cmd = ["docker-compose"]
        else:
            self.cmd = ["docker", "compose"]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for f in self.files for arg in ("-f", str(f))]
        proc = subprocess.run(
            [*self.cmd, *files, "-p", self.project, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    @contextlib.contextmanager
    def running(self, request, healthy: Sequence[str]) -> Iterator[Compose]:
        """Build, `up -d`, wait until the `healthy` services are; afterwards `down --volumes`. The logs are
        printed when starting or a test of the session fails."""
        started = time.monotonic()
        try:
            self.run("build", timeout=900)
            built = time.monotonic()
            self.run("up", "-d", timeout=600)
            self.wait_healthy(healthy)
            print(f"\ncompose: built in {built - started:.0f}s, healthy {time.monotonic() - built:.0f}s later")
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            if request.session.testsfailed:
                print(self.logs())
            self.run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=300)

    def containers(self, service: str) -> list[str]:
        out = self.run("ps", "-q", service).stdout.split()
        return sorted(out)

    def inspect(self, container: str, template: str) -> str:
        proc = subprocess.run(
            ["docker", "inspect", "--format", template, container], capture_output=True, text=True, timeout=30
        )
        return proc.stdout.strip()

    def health(self, container: str) -> str:
        return self.inspect(container, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")

    def wait_healthy(self, services, timeout: float = 240, count: dict[str, int] | None = None) -> None:
        count = count or {}

        def all_healthy():
            for service in services:
                ids = self.containers(service)
                if len(ids) != count.get(service, 1):
                    return False
                for cid in ids:
                    state = self.health(cid)
                    if state.startswith(("exited", "dead")) or "unhealthy" in state:
                        raise AssertionError(f"{service} {cid[:12]} is {state}:\n{self.logs(service)}")
                    if state != "running healthy":
                        return False
            return True

        wait_for(all_healthy, timeout=timeout, interval=1.0, what=f"healthy {', '.join(services)}")

    def exec(self, service: str, *args: str, index: int = 1) -> str:
        return self.run("exec", "-T", "--index", str(index), service, *args, timeout=120).stdout

    def logs(self, service: str = "", tail: int = 60) -> str:
        proc = self.run(
            "logs",
            "--no-color",
            "--tail",
            str(tail),
            *([service] if service else []),
            check=False,
            timeout=120,
        )
        return proc.stdout[-20000:]
