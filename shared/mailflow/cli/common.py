"""What every `mailflow` sub-command needs: where the services are, the admin token, output helpers.

Settings are read as the services read theirs: the environment, then the configuration file
(MAILFLOW_CONFIG or `mailflow --config`), then the local runner's defaults. Where a service answers:
MAILFLOW_<X>_URL (MAILFLOW_STORE_URL, MAILFLOW_QUEUE_URL, MAILFLOW_SMTP_URL...; containers set them),
else its MAILFLOW_<X>_HTTP_LISTEN, else its development port. The admin token comes from
MAILFLOW_ADMIN_TOKEN or, for a local run, from `<data>/secrets.env` (data = MAILFLOW_DATA_DIR or
./data). An HTTP error prints the server's `detail` and exits 1; a service that does not answer exits 2
with a hint; a destructive command asked at a terminal and not confirmed exits 1. The resolver's debugging
routes take the service token instead (MAILFLOW_SERVICE_TOKEN, found the same way).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from mailflow.configfile import lookup
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER, SERVICE_TOKEN_HEADER
from mailflow.hostport import http_url
from mailflow.services import SERVICES

console = Console()
err = Console(stderr=True)

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
# Variables the command reads beyond the services' own settings (`mailflow config check` knows them).
CLI_VARIABLES = ("MAILFLOW_DATA_DIR", "MAILFLOW_BIND", "MAILFLOW_INSTALLATION", *(s.url_var for s in SERVICES.values()))


def data_dir() -> Path:
    return Path(lookup("MAILFLOW_DATA_DIR") or "data")


def token(var: str = "MAILFLOW_ADMIN_TOKEN", required: bool = True) -> str | None:
    """A token from `var`, else from a local run's secrets.env; exit 2 if there is none and it is required."""
    value = lookup(var)
    if value:
        return value
    path = data_dir() / "secrets.env"
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            if k.strip() == var:
                return v.strip()
    if not required:
        return None
    err.print(f"[red]no token[/]: set {var} (a local `mailflow up` keeps it in data/secrets.env)")
    raise typer.Exit(2)


def admin_token(required: bool = True) -> str | None:
    return token("MAILFLOW_ADMIN_TOKEN", required)


def service_url(service: str) -> str:
    """Where a service's HTTP answers, for this command (see the module docstring)."""
    row = SERVICES[service]
    url = lookup(row.url_var)
    if url:
        return url.rstrip("/")
    listen = lookup(row.var("http_listen"))
    return http_url(listen) if listen else row.url


def confirm(question: str, yes: bool) -> None:
    """Ask before destroying something, unless --yes; no answer (end of input) is a no: exit 1."""
    if yes:
        return
    try:
        ok = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        ok = False
    if not ok:
        err.print("nothing done (--yes skips this question)")
        raise typer.Exit(1)


class Api:
    """A small admin REST client: `Api.store().post("/admin/domains", {...})`."""

    def __init__(self, base_url: str, name: str, header: str = ADMIN_TOKEN_HEADER, token_var: str = "MAILFLOW_ADMIN_TOKEN"):
        self.base_url, self.name = base_url.rstrip("/"), name
        self.header, self.token_var = header, token_var

    @classmethod
    def store(cls) -> Api:
        return cls(service_url("mailbox-store"), "mailbox-store")

    @classmethod
    def queue(cls) -> Api:
        return cls(service_url("queue"), "queue")

    @classmethod
    def resolver(cls) -> Api:
        return cls(service_url("resolver"), "resolver", SERVICE_TOKEN_HEADER, "MAILFLOW_SERVICE_TOKEN")

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        try:
            r = httpx.request(
                method,
                self.base_url + path,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers={self.header: token(self.token_var)},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            err.print(f"[red]{self.name} at {self.base_url} did not answer[/] ({type(exc).__name__}); is the stack running?")
            raise typer.Exit(2) from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if not isinstance(detail, str):
                detail = json.dumps(detail)
            err.print(f"[red]error {r.status_code}[/]: {detail}")
            raise typer.Exit(1)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params) -> Any:
        return self.request("POST", path, body, params)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str, **params) -> Any:
        return self.request("DELETE", path, params=params)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
