"""`mailflow queue ...` and `mailflow trace ...` (owned by the queue service's engineer; filled in there)."""

import typer

app = typer.Typer(help="Inspect and steer the mail queue (like mailq / postqueue / postsuper).", no_args_is_help=True)
