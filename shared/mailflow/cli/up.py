"""`mailflow up`: the whole stack on this machine, in the foreground, until Ctrl-C or SIGTERM.

Starts nats-server with JetStream (unless one already answers at MAILFLOW_NATS_URL), then the six
services as separate processes, waits until each says it is ready, prints the endpoints, and
restarts a service that dies (a few times, then gives up and stops everything). Ctrl-C or SIGTERM
stops the services (SIGTERM, then SIGKILL after a grace period) and the nats-server it started.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import typer

from mailflow.cli.common import console, data_dir
from mailflow.settings import split_hostport
from mailflow.stack import Ports, Stack, nats_already_running


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    return split_hostport(value)[1] if value else default


def ports_from_env() -> Ports:
    """Every port can be moved with the same variables the services read."""
    p = Ports(host=os.environ.get("MAILFLOW_BIND", "127.0.0.1"))
    p.smtp = _env_port("MAILFLOW_SMTP_LISTEN", p.smtp)
    p.submission = _env_port("MAILFLOW_SMTP_SUBMISSION_LISTEN", p.submission)
    p.smtps = _env_port("MAILFLOW_SMTP_SMTPS_LISTEN", p.smtps)
    p.imap = _env_port("MAILFLOW_IMAP_LISTEN", p.imap)
    p.imaps = _env_port("MAILFLOW_IMAP_IMAPS_LISTEN", p.imaps)
    p.pop3 = _env_port("MAILFLOW_IMAP_POP3_LISTEN", p.pop3)
    p.pop3s = _env_port("MAILFLOW_IMAP_POP3S_LISTEN", p.pop3s)
    prefixes = {
        "smtp-ingress": "SMTP",
        "queue": "QUEUE",
        "resolver": "RESOLVER",
        "delivery": "DELIVERY",
        "mailbox-store": "STORE",
        "imap-pop3": "IMAP",
    }
    for service, pre in prefixes.items():
        p.http[service] = _env_port(f"MAILFLOW_{pre}_HTTP_LISTEN", p.http[service])
    return p


def up(
    data: Path = typer.Option(None, help="Data folder (default: MAILFLOW_DATA_DIR or ./data)."),
    delivery: int = typer.Option(1, help="How many delivery processes to run."),
    fsync: bool = typer.Option(True, help="JetStream fsyncs every write (survives power loss)."),
) -> None:
    """Run the whole stack locally: nats-server and the six services."""
    data = (data or data_dir()).resolve()
    ports = ports_from_env()
    nats_url = os.environ.get("MAILFLOW_NATS_URL")
    external = None
    if nats_url and nats_already_running(nats_url):
        external = nats_url
    elif not nats_url:
        default = f"nats://{ports.host}:{ports.nats}"
        if nats_already_running(default):
            external = default
    stack = Stack(data, ports, nats_url=external, sync_always=fsync, delivery_instances=delivery, console=True)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(f"[bold]mailflow[/] starting in {data}")
    if external:
        console.print(f"using the NATS server already answering at {external}")
        console.print("  (its own JetStream settings apply: --fsync only configures a server mailflow starts)")
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
                name = proc.service if proc.index == 0 else f"{proc.service}-{proc.index}"
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
    finally:
        console.print("stopping...")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        console.print("stopped")


def _banner(stack: Stack, data: Path) -> None:
    p = stack.ports
    h = p.host
    lines = [
        ("SMTP (MX)", f"{h}:{p.smtp}", "telnet " + f"{h} {p.smtp}"),
        ("Submission (STARTTLS, AUTH)", f"{h}:{p.submission}", ""),
        ("SMTPS (implicit TLS)", f"{h}:{p.smtps}", ""),
        ("IMAP", f"{h}:{p.imap}", f"telnet {h} {p.imap}"),
        ("IMAPS", f"{h}:{p.imaps}", ""),
        ("POP3", f"{h}:{p.pop3}", f"telnet {h} {p.pop3}"),
        ("POP3S", f"{h}:{p.pop3s}", ""),
        ("NATS", stack.nats_url, ""),
    ]
    lines += [(f"{s} (HTTP)", stack.http_url(s), "") for s in p.http]
    # Plain lines (no wrapping at the terminal's width): they are meant to be copied.
    typer.echo("\nmailflow is up")
    for name, where, hint in lines:
        typer.echo(f"  {name:<28} {where:<26} {hint}".rstrip())
    typer.echo(f"  data: {data}   logs: {data / 'logs'}")
    typer.echo("  next: .venv/bin/mailflow domain add example.test")
    typer.echo("        .venv/bin/mailflow user add alice@example.test --password secret")
    typer.echo("  Ctrl-C stops everything.\n")
