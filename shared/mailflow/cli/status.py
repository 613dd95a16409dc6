"""`mailflow status`: is everything up? One look at the whole system, like `postfix status` + `doveadm`.

For each of the seven services: `/healthz` (alive, and the version it runs) and `/readyz` (ready, or the
checks that fail), at the address `mailflow.cli.common.service_url` gives. Then NATS (reachable: its
INFO line, with the server's version and whether JetStream is on), the databases (as the store's and
the queue's readiness report them) and the queue's depth by state (its admin REST; needs the admin
token, else shown as unknown). All asked at once, each within --timeout. Exit 0 when everything is up
and ready, 1 when anything is down or not ready; `--json` prints the same as one object.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from mailflow.cli.common import JSON, admin_token, console, print_json, service_url
from mailflow.configfile import lookup
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.services import LOCAL_HOST, NATS_STANDARD_PORT, SERVICES
from mailflow.settings import ServiceSettings

DATABASES = ("mailbox-store", "queue")  # their readiness check "database" is their database


async def _service(client: httpx.AsyncClient, name: str) -> dict:
    url = service_url(name)
    out: dict = {"url": url, "alive": False, "ready": False, "version": None, "failing": [], "error": None}
    try:
        health = await client.get(f"{url}/healthz")
        out["alive"] = health.status_code == 200
        if out["alive"]:
            out["version"] = health.json().get("version")
        ready = await client.get(f"{url}/readyz")
        out["ready"] = ready.status_code == 200
        out["failing"] = ready.json().get("failing", []) if not out["ready"] else []
    except (httpx.HTTPError, ValueError) as exc:
        out["error"] = str(exc) or type(exc).__name__
    return out


async def _nats(url: str, timeout: float) -> dict:
    """Reachable when the server's INFO line arrives (before any authentication)."""
    first = urlparse(url.split(",")[0].strip())
    host, port = first.hostname or LOCAL_HOST, first.port or NATS_STANDARD_PORT
    out: dict = {"url": url, "reachable": False, "version": None, "jetstream": None, "error": None}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        verb, _, body = line.decode(errors="replace").partition(" ")
        if verb != "INFO":
            raise ValueError(f"not a NATS server (it said {line[:40]!r})")
        info = json.loads(body)
        out.update(reachable=True, version=info.get("version"), jetstream=bool(info.get("jetstream")))
    except (OSError, TimeoutError, ValueError) as exc:
        out["error"] = str(exc) or type(exc).__name__
    return out


async def _queue_depth(client: httpx.AsyncClient, token: str | None) -> dict | None:
    if token is None:
        return None
    try:
        r = await client.get(f"{service_url('queue')}/queue/counts", headers={ADMIN_TOKEN_HEADER: token})
        return r.json() if r.status_code == 200 else {"error": f"HTTP {r.status_code}"}
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc) or type(exc).__name__}


async def gather(timeout: float) -> dict:
    nats_url = lookup("MAILFLOW_NATS_URL") or ServiceSettings.model_fields["nats_url"].default
    async with httpx.AsyncClient(timeout=timeout) as client:
        services, nats, depth = await asyncio.gather(
            asyncio.gather(*(_service(client, name) for name in SERVICES)),
            _nats(nats_url, timeout),
            _queue_depth(client, admin_token(required=False)),
        )
    by_name = dict(zip(SERVICES, services, strict=True))
    databases = {
        name: (None if not by_name[name]["alive"] else "database" not in by_name[name]["failing"])
        for name in DATABASES
    }
    ok = all(s["ready"] for s in services) and nats["reachable"] and all(databases.values())
    return {"ok": ok, "services": by_name, "nats": nats, "databases": databases, "queue": depth}


def _state(s: dict) -> str:
    if s["ready"]:
        return "[green]ready[/]"
    if s["alive"]:
        return f"[yellow]not ready[/] ({escape(', '.join(s['failing']))})"
    return f"[red]down[/] ({escape(s['error'])})" if s["error"] else "[red]down[/]"


def status(
    as_json: bool = JSON,
    timeout: float = typer.Option(3.0, help="Seconds to wait for each answer."),
) -> None:
    """Every service's health and version, the queue's depth by state, NATS and the databases."""
    report = asyncio.run(gather(timeout))
    if as_json:
        print_json(report)
        raise typer.Exit(0 if report["ok"] else 1)
    table = Table(title="mailflow status", title_justify="left")
    for column in ("service", "state", "version", "url"):
        table.add_column(column, overflow="fold")
    for name, s in report["services"].items():
        table.add_row(name, _state(s), escape(s["version"] or ""), escape(s["url"]))
    console.print(table)
    nats = report["nats"]
    if nats["reachable"]:
        js = "JetStream on" if nats["jetstream"] else "[red]JetStream off[/]"
        console.print(f"NATS       [green]reachable[/] at {escape(nats['url'])} (nats-server {nats['version']}, {js})", soft_wrap=True)
    else:
        console.print(f"NATS       [red]unreachable[/] at {escape(nats['url'])} ({escape(nats['error'])})", soft_wrap=True)
    dbs = ", ".join(
        f"{name} " + ("[green]ok[/]" if up else "[red]down[/]" if up is False else "unknown (service down)")
        for name, up in report["databases"].items()
    )
    console.print(f"databases  {dbs}", soft_wrap=True)
    depth = report["queue"]
    if depth is None:
        console.print("queue      depth unknown: no admin token (MAILFLOW_ADMIN_TOKEN)", soft_wrap=True)
    elif "error" in depth:
        console.print(f"queue      depth unknown: {escape(depth['error'])}", soft_wrap=True)
    else:
        states = ", ".join(f"{state} {n}" for state, n in depth["states"].items())
        console.print(f"queue      {depth['messages']} message(s) not final; recipients: {states}", soft_wrap=True)
    raise typer.Exit(0 if report["ok"] else 1)
