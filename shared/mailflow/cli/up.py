"""`mailflow up` and `mailflow serve`: run Mailflow in the foreground, until Ctrl-C or SIGTERM.

`up` is the whole stack on this machine: its own nats-server with JetStream (on 127.0.0.1:14222,
never a server that merely happens to answer somewhere), unless MAILFLOW_NATS_URL names one (then that
one, which must answer: if it does not, `up` says so and exits 1), then the seven services as separate
processes. The installation is a NATS account of its own (MAILFLOW_INSTALLATION, default "mailflow"),
so two installations on one server never see each other's streams or subjects. It waits until each
service says it is ready, prints the endpoints, and restarts a service that dies (a few times, then gives up and stops
everything). Ctrl-C or SIGTERM stops the services (SIGTERM, then SIGKILL after a grace period) and the
nats-server it started. `serve <service>` is one service, as a container runs it: this process becomes
`python -m mailflow_<service>` (same PID, so signals reach the service).
"""

from __future__ import annotations

import enum
import os
import re
import signal
import sys
import time
from pathlib import Path

import typer

from mailflow.cli.common import console, data_dir, err
from mailflow.configfile import lookup
from mailflow.hostport import split_hostport
from mailflow.natsauth import DEFAULT_INSTALLATION
from mailflow.services import LISTENERS, LOCAL_HOST, SERVICES
from mailflow.stack import Ports, Stack, nats_already_running

ServiceName = enum.Enum("ServiceName", {name: name for name in SERVICES}, type=str)


def _port(name: str, default: int) -> int:
    value = lookup(name)
    return split_hostport(value)[1] if value else default


def configured_ports() -> Ports:
    """Every port can be moved with the variables the services read (or the configuration file), the
    address with MAILFLOW_BIND."""
    p = Ports(host=lookup("MAILFLOW_BIND") or LOCAL_HOST)
    for name, (row, listener) in LISTENERS.items():
        setattr(p, name, _port(row.var(listener.setting), getattr(p, name)))
    for name, row in SERVICES.items():
        p.http[name] = _port(row.var("http_listen"), p.http[name])
    return p


def serve(
    service: ServiceName = typer.Argument(..., help="The service to run.", show_default=False),
) -> None:
    """Run one service in the foreground, as a container does (the same as `python -m mailflow_<service>`)."""
    module = SERVICES[service.value].module
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module])


def up(
    data: Path = typer.Option(None, help="Data folder (default: MAILFLOW_DATA_DIR or ./data)."),
    delivery: int = typer.Option(1, help="How many delivery processes to run."),
    fsync: bool = typer.Option(True, help="JetStream fsyncs every write (survives power loss)."),
) -> None:
    """Run the whole stack locally: nats-server and the seven services."""
    data = (data or data_dir()).resolve()
    ports = configured_ports()
    external = lookup("MAILFLOW_NATS_URL") or None
    installation = lookup("MAILFLOW_INSTALLATION") or DEFAULT_INSTALLATION
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", installation):
        err.print(f"[red]MAILFLOW_INSTALLATION={installation!r}[/]: lower-case letters, digits and '-', at most 40")
        raise typer.Exit(2)
    if external and not nats_already_running(external):
        err.print(f"[red]no NATS server answers at {external}[/] (MAILFLOW_NATS_URL names it): start it, or unset")
        err.print("MAILFLOW_NATS_URL and mailflow runs a nats-server of its own")
        raise typer.Exit(1)
    stack = Stack(
        data, ports, nats_url=external, sync_always=fsync, delivery_instances=delivery, console=True,
        installation=installation,
    )  # fmt: skip
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(f"[bold]mailflow[/] starting in {data}")
    if external:
        console.print(f"using the NATS server at {external} (MAILFLOW_NATS_URL) as account {installation!r}:")
        console.print(f"  it needs the users in {data / 'nats-accounts.conf'} (include it in its configuration);")
        console.print("  its own JetStream settings apply: --fsync only configures a server mailflow starts")
    try:
        stack.start(timeout=90)
    except RuntimeError as exc:
        console.print(f"[red]start failed[/]: {exc}")
        raise typer.Exit(1) from None
    _banner(stack, data)
    restarts: dict[str, int] = {}
    try:
        while not stop["now"]:
            time.sleep(0.2)
            for proc in stack.dead():
                name = proc.name
                n = restarts[name] = restarts.get(name, 0) + 1
                if n > 5:
                    console.print(f"[red]{name} keeps dying[/] (see {proc.log_path}); stopping")
                    stop["now"] = True
                    break
                console.print(f"[yellow]{name} exited ({proc.popen.returncode}); restarting ({n}/5)[/]")
                try:
                    stack.start_service(proc.service, proc.index)
                except RuntimeError as exc:
                    console.print(f"[red]{exc}[/]")
            if stack.renewer is not None and stack.renewer.poll() is not None and not stop["now"]:
                n = restarts["certs"] = restarts.get("certs", 0) + 1
                if n > 5:
                    console.print(f"[red]the certificate renewer keeps dying[/] (see {stack.renewer_log_path}); stopping")
                    stop["now"] = True
                    break
                console.print(f"[yellow]certs exited ({stack.renewer.returncode}); restarting ({n}/5)[/]")
                stack.start_renewer()
    finally:
        console.print("stopping...")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        console.print("stopped")


def _banner(stack: Stack, data: Path) -> None:
    p = stack.ports
    h = p.host
    plain = {"smtp", "imap", "pop3"}  # the ones to try by hand
    lines = [
        (li.label, f"{h}:{getattr(p, name)}", f"telnet {h} {getattr(p, name)}" if name in plain else "")
        for name, (_, li) in LISTENERS.items()
    ]
    lines.append(("NATS", stack.nats_url, ""))
    lines += [(f"{s} (HTTP)", stack.http_url(s), "") for s in p.http]
    if stack.renewer is not None:
        lines.append(("ACME certificates", "python -m mailflow.certs", f"log: {stack.renewer_log_path}"))
    # Plain lines (no wrapping at the terminal's width): they are meant to be copied.
    typer.echo("\nmailflow is up")
    for name, where, hint in lines:
        typer.echo(f"  {name:<28} {where:<26} {hint}".rstrip())
    typer.echo(f"  data: {data}   logs: {data / 'logs'}")
    typer.echo("  next: .venv/bin/mailflow domain add example.test")
    typer.echo("        .venv/bin/mailflow user add alice@example.test --password secret")
    typer.echo("        .venv/bin/mailflow status")
    typer.echo("  Ctrl-C stops everything.\n")
