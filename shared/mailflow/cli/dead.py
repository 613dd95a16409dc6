"""`mailflow dead ...`: what the workers gave up on (stream DEAD), over the queue service's admin REST API.

list (oldest first, a page at a time), show (reason, service, subject, time, headers, the decoded
payload), retry (publish it again where it came from, and remove it), delete. A letter is named by its
number (its sequence in DEAD). Each prints a rich table or text, or JSON with `--json`. Errors: see
`mailflow.cli.common` (exit 1 with the server's detail, 2 if it does not answer).
"""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from mailflow.cli.common import JSON, YES, Api, confirm, console, err, print_json
from mailflow.cli.queue import when

app = typer.Typer(help="Messages the services gave up on (stream DEAD): list, show, retry, delete.", no_args_is_help=True)

@app.command("list")
def list_(
    after: int = typer.Option(0, "--after", help="Only letters after this number (the next page: the number the last one printed)."),
    limit: int = typer.Option(50, help="At most this many letters."),
    as_json: bool = JSON,
) -> None:
    """Dead letters, oldest first: when, which service gave up, on what, and why."""
    page = Api.queue().get("/dead", after=after, limit=limit)
    if as_json:
        return print_json(page)
    table = Table(title=f"dead letters: {page['total']}", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True, style="bold")
    table.add_column("at", no_wrap=True)
    table.add_column("service / subject", no_wrap=True)
    table.add_column("queue ids / reason", overflow="fold", ratio=1)
    for d in page["items"]:
        ids = ", ".join(d["queue_ids"][:5]) + (f" (+{len(d['queue_ids']) - 5})" if len(d["queue_ids"]) > 5 else "")
        table.add_row(str(d["seq"]), when(d["at"]), f"{d['service']}\n{d['subject']}", Text(f"{ids}\n{d['reason']}" if ids else d["reason"]))
    console.print(table)
    if page["next"] is not None:
        console.print(f"more: mailflow dead list --after {page['next']}")


@app.command("show")
def show(
    seq: int = typer.Argument(..., help="The letter's number (from `mailflow dead list`).", show_default=False),
    as_json: bool = JSON,
) -> None:
    """One dead letter: reason, service, subject, time, headers and the original payload, decoded."""
    d = Api.queue().get(f"/dead/{seq}")
    if as_json:
        return print_json(d)
    console.print(f"[bold]dead letter {d['seq']}[/]  {when(d['at'])}  from {d['service']}  on {d['subject']}  ({d['size']} bytes, delivered {d['delivered']} times)")
    console.print(Text(f"reason: {d['reason']}"))
    for k, v in d["headers"].items():
        console.print(Text(f"{k}: {v}"))
    typer.echo(json.dumps(d["payload"], indent=2) if d["payload_text"] is None else d["payload_text"])


@app.command("retry")
def retry(
    seqs: list[int] = typer.Argument(None, help="Letter numbers."),
    all_: bool = typer.Option(False, "--all", help="Every letter that can go back (after an outage)."),
) -> None:
    """Publish letters again on the subject they came from, and remove them from DEAD."""
    if all_ == bool(seqs):
        err.print("[red]name letter numbers, or --all[/]")
        raise typer.Exit(2)
    if all_:
        res = Api.queue().post("/dead/retry")
        console.print(f"published again: {res['count']} letter(s)")
        return
    for seq in seqs:
        Api.queue().post(f"/dead/{seq}/retry")
        console.print(f"{seq} published again")


@app.command("delete")
def delete(seqs: list[int] = typer.Argument(..., help="Letter numbers."), yes: bool = YES) -> None:
    """Remove letters from DEAD for good (asks first, unless --yes)."""
    confirm(f"Delete dead letter(s) {', '.join(map(str, seqs))} for good?", yes)
    for seq in seqs:
        Api.queue().delete(f"/dead/{seq}")
        console.print(f"{seq} deleted")


if __name__ == "__main__":
    app()
