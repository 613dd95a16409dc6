"""`mailflow dkim keygen|rotate|activate|remove|list`: a domain's DKIM keys, kept by mailbox-store.

A key set (RSA 2048 + Ed25519, one selector) is made *pending*: publish its records first (`mailflow
dns records DOMAIN` prints them), then `activate` it; delivery signs with it within its cache time
(MAILFLOW_DELIVERY_DKIM_CACHE_S, 60 s). Activating a set retires the one that signed before: keep that
one published for a few days (mail signed with it may still be on its way or be checked again), then
`remove` it. Only public keys ever reach this command.
"""

from __future__ import annotations

from urllib.parse import quote

import typer

from mailflow.cli.common import JSON, YES, Api, confirm, console, print_json, print_table

app = typer.Typer(help="DKIM signing keys of our domains (RFC 6376, RFC 8463).", no_args_is_help=True)

DOMAIN = typer.Argument(..., help="One of our domains, e.g. example.com.", show_default=False)
SELECTOR = typer.Argument(..., help="The key set's selector, as `mailflow dkim list` shows it.", show_default=False)
NEW_SELECTOR = typer.Option(None, "--selector", "-s", help="The selector (a DNS label); default mf<YYYYMMDD>.")


def _path(domain: str, selector: str) -> str:
    return f"/admin/dkim/{quote(domain, safe='')}/{quote(selector, safe='')}"


def _made(key: dict) -> None:
    d, s = key["domain"], key["selector"]
    console.print(f"DKIM key set {s} for {d} made (pending: it does not sign yet). Publish:")
    for r in key["records"]:
        console.print(f"  {r['selector']}._domainkey.{d}  TXT  ({r['algorithm']})", highlight=False)
    console.print(f"as `mailflow dns records {d}` prints them, then: mailflow dkim activate {d} {s}", highlight=False)


@app.command("keygen")
def keygen(domain: str = DOMAIN, selector: str | None = NEW_SELECTOR) -> None:
    """Make a DKIM key set (RSA 2048 + Ed25519) for DOMAIN, pending until `activate`."""
    _made(Api.store().post("/admin/dkim", {"domain": domain, "selector": selector}))


@app.command("rotate")
def rotate(domain: str = DOMAIN, selector: str | None = NEW_SELECTOR) -> None:
    """Make the next key set for DOMAIN beside the one that signs now; it signs after `activate`."""
    api = Api.store()
    active = [k["selector"] for k in api.get("/admin/dkim", domain=domain) if k["state"] == "active"]
    if not active:
        console.print(f"{domain} has no signing key to rotate: `mailflow dkim keygen {domain}`, then activate it")
        raise typer.Exit(1)
    _made(api.post("/admin/dkim", {"domain": domain, "selector": selector}))
    console.print(f"after activating it, keep {active[0]}'s records published a few days, then: mailflow dkim remove {domain} {active[0]}", highlight=False)


@app.command("activate")
def activate(domain: str = DOMAIN, selector: str = SELECTOR) -> None:
    """Sign DOMAIN's mail with SELECTOR from now on (publish its records first); the set before is retired."""
    key = Api.store().post(_path(domain, selector) + "/activate")
    console.print(f"{key['selector']} signs {key['domain']}'s mail (every delivery process within its DKIM cache time)", highlight=False)


@app.command("remove")
def remove(
    domain: str = DOMAIN,
    selector: str = SELECTOR,
    force: bool = typer.Option(False, help="Also the signing set: DOMAIN's mail then leaves unsigned."),
    yes: bool = YES,
) -> None:
    """Delete a key set that no longer signs (then take its records out of DNS)."""
    confirm(f"Delete DKIM key {selector} of {domain}?", yes)
    Api.store().delete(_path(domain, selector), force="true" if force else None)
    console.print(f"DKIM key {selector} of {domain} removed; its {selector}-*._domainkey records can go from DNS", highlight=False)


@app.command("list")
def list_keys(domain: str | None = typer.Option(None, help="Only this domain."), as_json: bool = JSON) -> None:
    """Key sets with their state and DNS selectors (public parts only)."""
    items = Api.store().get("/admin/dkim", domain=domain)
    if as_json:
        return print_json(items)
    rows = [
        [k["domain"], k["selector"], k["state"], ", ".join(r["selector"] for r in k["records"]), k.get("created_at"), k.get("activated_at")]
        for k in items
    ]
    print_table("DKIM keys", ["domain", "selector", "state", "DNS selectors", "created", "activated"], rows)
