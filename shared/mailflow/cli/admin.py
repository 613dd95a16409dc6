"""`mailflow domain|user|alias ...`: administer mailbox-store over its admin REST API.

Deleting asks for confirmation unless `--yes` (see `mailflow.cli.common.confirm`)."""

from __future__ import annotations

from urllib.parse import quote

import typer

from mailflow.cli.common import JSON, YES, Api, confirm, console, print_json, print_table

domain_app = typer.Typer(help="Mail domains this server receives mail for.", no_args_is_help=True)
user_app = typer.Typer(help="Users (mailboxes) and their passwords and quotas.", no_args_is_help=True)
alias_app = typer.Typer(
    help="Aliases and catch-alls (@domain) that forward to users, other aliases or addresses elsewhere.", no_args_is_help=True
)

DOMAIN = typer.Argument(..., help="A domain name, e.g. example.com.", show_default=False)
ADDRESS = typer.Argument(..., help="A user's address, e.g. alice@example.com.", show_default=False)


def _q(s: str) -> str:
    return quote(s, safe="@")


def _all(api: Api, path: str, **params) -> list[dict]:
    items, offset = [], 0
    while True:
        page = api.get(path, offset=offset, limit=500, **params)
        items += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return items


@domain_app.command("add")
def domain_add(name: str = DOMAIN) -> None:
    """Receive mail for NAME."""
    Api.store().post("/admin/domains", {"name": name})
    console.print(f"domain {name} added")


@domain_app.command("list")
def domain_list(as_json: bool = JSON) -> None:
    """The domains this server receives mail for, with their number of users."""
    items = _all(Api.store(), "/admin/domains")
    if as_json:
        return print_json(items)
    print_table("domains", ["domain", "users", "created"], [[d["name"], d.get("users"), d.get("created_at")] for d in items])


@domain_app.command("del")
def domain_del(
    name: str = DOMAIN,
    force: bool = typer.Option(False, help="Also delete its users and their mail."),
    yes: bool = YES,
) -> None:
    """Stop receiving mail for NAME (refused while it has users, unless --force)."""
    confirm(f"Delete domain {name}" + (" with all of its users and their mail?" if force else "?"), yes)
    Api.store().delete(f"/admin/domains/{_q(name)}", force=str(force).lower() if force else None)
    console.print(f"domain {name} deleted")


def _password(given: str | None, confirm: bool = True) -> str:
    if given is not None:
        return given
    return typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)


@user_app.command("add")
def user_add(
    address: str = ADDRESS,
    password: str | None = typer.Option(None, help="The password; asked for if not given."),
    quota: int | None = typer.Option(None, help="Storage quota in bytes (default: the server's)."),
) -> None:
    """Create the user ADDRESS (its domain must exist) with INBOX, Sent, Drafts, Trash, Junk, Archive."""
    Api.store().post("/admin/users", {"address": address, "password": _password(password), "quota_bytes": quota})
    console.print(f"user {address} added")


@user_app.command("list")
def user_list(domain: str | None = typer.Option(None, help="Only this domain."), as_json: bool = JSON) -> None:
    """Users with their message count, storage used and quota."""
    items = _all(Api.store(), "/admin/users", domain=domain)
    if as_json:
        return print_json(items)
    rows = [[u["address"], u.get("messages"), u.get("used_bytes"), u.get("quota_bytes") or "-"] for u in items]
    print_table("users", ["address", "messages", "used bytes", "quota bytes"], rows)


@user_app.command("passwd")
def user_passwd(
    address: str = ADDRESS,
    password: str | None = typer.Option(None, help="The new password; asked for if not given."),
) -> None:
    """Set a user's password."""
    Api.store().put(f"/admin/users/{_q(address)}/password", {"password": _password(password)})
    console.print(f"password of {address} changed")


@user_app.command("quota")
def user_quota(
    address: str = ADDRESS,
    quota_bytes: int = typer.Argument(..., help="Bytes; 0 for unlimited.", show_default=False),
) -> None:
    """Set a user's storage quota."""
    Api.store().put(f"/admin/users/{_q(address)}/quota", {"quota_bytes": quota_bytes or None})
    console.print(f"quota of {address} set")


@user_app.command("role")
def user_role(
    address: str = ADDRESS,
    role: str = typer.Argument(..., help="admin (the web console's admin pages) or user.", show_default=False),
) -> None:
    """Make ADDRESS an administrator of the web console, or a plain user again."""
    Api.store().put(f"/admin/users/{_q(address)}/role", {"role": role})
    console.print(f"{address} is now {role}")


@user_app.command("disable")
def user_disable(address: str = ADDRESS) -> None:
    """End ADDRESS's sessions and refuse its logins (IMAP, POP3, SMTP AUTH); its mail is still delivered."""
    Api.store().post(f"/admin/users/{_q(address)}/disable")
    console.print(f"user {address} disabled")


@user_app.command("enable")
def user_enable(address: str = ADDRESS) -> None:
    """Let ADDRESS log in again."""
    Api.store().post(f"/admin/users/{_q(address)}/enable")
    console.print(f"user {address} enabled")


@user_app.command("del")
def user_del(address: str = ADDRESS, yes: bool = YES) -> None:
    """Delete the user with all of its mail."""
    confirm(f"Delete {address} and all of its mail?", yes)
    Api.store().delete(f"/admin/users/{_q(address)}")
    console.print(f"user {address} deleted")


@alias_app.command(
    "add",
    epilog="A target in a local domain is a user or another alias. A target in any other domain gets a remote "
    "delivery of its own, with the original envelope sender (its bounces go to the sender) and an ARC seal made "
    "with the alias domain's DKIM key (mailflow dkim). An alias that would lead back to itself is refused.",
)
def alias_add(
    address: str = typer.Argument(..., help="The alias, or @domain for a catch-all.", show_default=False),
    targets: list[str] = typer.Argument(..., help="Addresses it forwards to (at most 100).", show_default=False),
) -> None:
    """Mail to ADDRESS (or, for @domain, to any unknown address there) goes to TARGETS."""
    Api.store().post("/admin/aliases", {"address": address, "targets": targets})
    console.print(f"alias {address} -> {', '.join(targets)} added")


@alias_app.command("list")
def alias_list(domain: str | None = typer.Option(None, help="Only this domain."), as_json: bool = JSON) -> None:
    """Aliases and catch-alls with their targets."""
    items = _all(Api.store(), "/admin/aliases", domain=domain)
    if as_json:
        return print_json(items)
    print_table("aliases", ["address", "targets"], [[a["address"], ", ".join(a["targets"])] for a in items])


@alias_app.command("del")
def alias_del(
    address: str = typer.Argument(..., help="The alias, or @domain for a catch-all.", show_default=False),
    yes: bool = YES,
) -> None:
    """Delete an alias: mail to it is refused from then on (unless a catch-all takes it)."""
    confirm(f"Delete alias {address}?", yes)
    Api.store().delete(f"/admin/aliases/{_q(address)}")
    console.print(f"alias {address} deleted")
