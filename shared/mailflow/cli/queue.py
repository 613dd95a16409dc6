"""`mailflow queue ...` and `mailflow trace ...`: the mail queue over the queue service's admin REST API.

In the spirit of mailq / postqueue / postsuper: list (what waits, and why), show, flush (retry every
deferred recipient now), retry, hold, release, delete (asks first, unless --yes), counts. Each prints a
rich table, or JSON with `--json`. Errors: see `mailflow.cli.common` (exit 1 with the server's detail,
2 if it does not answer).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import typer
from rich.table import Table
from rich.text import Text

from mailflow.cli.common import JSON, YES, Api, confirm, console, print_json, print_table

app = typer.Typer(help="Inspect and steer the mail queue (like mailq / postqueue / postsuper).", no_args_is_help=True)

QUEUE_ID = typer.Argument(..., help="The queue id (from the 250 reply, the log or `queue list`).", show_default=False)
STATES = ("queued", "inflight", "deferred", "held", "delivered", "bounced")


def when(value: str | None) -> str:
    """An ISO time from the API as `YYYY-MM-DD HH:MM:SS`."""
    return (value or "")[:19].replace("T", " ")


@app.command("list")
def list_(
    state: str = typer.Option(None, "--state", help="Only messages with a recipient in this state: " + ", ".join(STATES)),
    limit: int = typer.Option(100, help="At most this many messages."),
    offset: int = typer.Option(0, help="Skip this many messages first (the next page: --offset 100)."),
    as_json: bool = JSON,
) -> None:
    """Messages still in the queue (like mailq), oldest first."""
    page = Api.queue().get("/queue", state=state, offset=offset, limit=limit)
    if as_json:
        return print_json(page)
    # like mailq: one row per message, its recipients (state, tries, next try, last error) inside
    title = f"queue: {page['total']} message(s)" + (f" with {state} recipients" if state else "")
    if offset or len(page["items"]) < page["total"]:
        title += f", {offset + 1 if page['items'] else offset}-{offset + len(page['items'])} shown"
    table = Table(title=title, title_justify="left")
    table.add_column("queue id", no_wrap=True, style="bold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("received", no_wrap=True)
    table.add_column("sender / recipients", overflow="fold", ratio=1)
    for m in page["items"]:
        lines = [f"<{m['mail_from']}>"]
        for r in m["recipients"]:
            if state and r["state"] != state:
                continue
            tries = f"{r['attempts']} tr{'y' if r['attempts'] == 1 else 'ies'}"
            nxt = f", next {when(r['next_attempt_at'])[11:]}" if r["next_attempt_at"] and r["state"] != "held" else ""
            lines.append(f"  {r['address']}  [{r['state']}] {tries}{nxt}")
            if r["last_error"] and r["state"] not in ("delivered",):
                lines.append(f"    {r['last_error'][:200]}")
        table.add_row(m["queue_id"], str(m["size"]), when(m["received_at"])[5:], Text("\n".join(lines)))
    console.print(table)


@app.command("show")
def show(queue_id: str = QUEUE_ID, as_json: bool = JSON) -> None:
    """One message: envelope and every recipient's state, attempts and last error."""
    m = Api.queue().get(f"/queue/{queue_id}")
    if as_json:
        return print_json(m)
    console.print(f"[bold]{m['queue_id']}[/]  from <{m['mail_from']}>  {m['size']} bytes  received {when(m['received_at'])}")
    console.print(f"trace {m['trace_id']}" + (f"  envid {m['envid']}" if m.get("envid") else "") + (f"  client {m['client_ip']}" if m.get("client_ip") else ""))
    table = Table(title="recipients", title_justify="left")
    for col in ("to", "state", "tries", "next try", "status", "remote", "last reply or error"):
        table.add_column(col, overflow="fold", ratio=1 if col.startswith("last") else None)
    for r in m["recipients"]:
        to = r["address"] + (f" (forwarded for {r['forwarded_for']})" if r.get("forwarded_for") else "")
        cells = [to, r["state"], r["attempts"], when(r["next_attempt_at"]), r["last_status"], r.get("remote_mta"), r["last_error"]]
        table.add_row(*(Text("" if v is None else str(v)) for v in cells))
    console.print(table)


def _changed(what: str, res: dict) -> None:
    console.print(f"{what}: {res['count']} recipient(s)")


@app.command("flush")
def flush() -> None:
    """Retry every deferred recipient now (like postqueue -f)."""
    _changed("flushed", Api.queue().post("/queue/flush"))


@app.command("retry")
def retry(queue_id: str = QUEUE_ID) -> None:
    """Retry this message's deferred and held recipients now (like postqueue -i)."""
    _changed(f"{queue_id} due now", Api.queue().post(f"/queue/{queue_id}/retry"))


@app.command("hold")
def hold(queue_id: str = QUEUE_ID) -> None:
    """Stop trying this message until released (like postsuper -h)."""
    _changed(f"{queue_id} held", Api.queue().post(f"/queue/{queue_id}/hold"))


@app.command("release")
def release(queue_id: str = QUEUE_ID) -> None:
    """Try a held message again, now (like postsuper -H)."""
    _changed(f"{queue_id} released", Api.queue().post(f"/queue/{queue_id}/release"))


@app.command("delete")
def delete(queue_id: str = QUEUE_ID, yes: bool = YES) -> None:
    """Remove a message from the queue without a bounce (like postsuper -d)."""
    confirm(f"Delete {queue_id} from the queue, with no bounce to its sender?", yes)
    Api.queue().delete(f"/queue/{queue_id}")
    console.print(f"{queue_id} deleted")


@app.command("counts")
def counts(as_json: bool = JSON) -> None:
    """How many recipients are in each state."""
    c = Api.queue().get("/queue/counts")
    if as_json:
        return print_json(c)
    print_table(f"queue: {c['messages']} message(s) not final", ["state", "recipients"], [[s, c["states"].get(s, 0)] for s in STATES])


def trace(queue_id: str = QUEUE_ID, as_json: bool = JSON) -> None:
    """Show one message's journey through the services (from the TRACE stream)."""
    events = Api.queue().get(f"/trace/{queue_id}")
    if as_json:
        return print_json(events)
    if not events:
        console.print(f"no trace for {queue_id} (unknown, or older than the trace stream keeps)")
        raise typer.Exit(1)
    print_table(
        f"trace of {queue_id}",
        ["started", "step", "service", "ms", "detail"],
        [[step_start(e), e["step"], e["service"], f"{e['duration_ms']:.1f}", e["detail"]] for e in events],
    )


def step_start(event: dict) -> str:
    """HH:MM:SS.mmm when a step began (an event's `at` is when it ended)."""
    at = datetime.fromisoformat(event["at"]) - timedelta(milliseconds=event["duration_ms"])
    return at.isoformat(timespec="milliseconds")[11:23]


if __name__ == "__main__":
    app()
