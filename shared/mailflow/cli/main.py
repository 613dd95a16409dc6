"""The `mailflow` command."""

from __future__ import annotations

import typer

from mailflow.cli import dead, queue
from mailflow.cli.admin import alias_app, domain_app, user_app
from mailflow.cli.up import up

app = typer.Typer(
    help="Mailflow: run a mail system locally and administer it.", no_args_is_help=True, add_completion=False
)
app.command("up")(up)
app.add_typer(domain_app, name="domain")
app.add_typer(user_app, name="user")
app.add_typer(alias_app, name="alias")
app.add_typer(queue.app, name="queue")
app.add_typer(dead.app, name="dead")
if hasattr(queue, "trace"):
    app.command("trace", help="Show one message's journey through the six services.")(queue.trace)


if __name__ == "__main__":
    app()
