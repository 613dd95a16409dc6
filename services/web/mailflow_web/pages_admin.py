"""The admin pages: overview, users, domains, aliases, DKIM with its DNS records, the queue, dead letters.

Every page needs an admin session (mailflow_web.console.Console.require); every change is a POST with
the session's CSRF token and goes through the same REST call as the `mailflow` command that does it
(shared/mailflow/cli/). A refused change (404, 409, 422 of the service) comes back to the page it was made
on as a message with the service's detail; deleting needs the name typed again (`confirm`), as the CLI
asks before it deletes.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import typer
from fastapi import APIRouter, HTTPException, Request

from mailflow.cli.dns import dane, records, served_policy
from mailflow.configfile import lookup
from mailflow.contracts.rest import DkimKeyPublic
from mailflow.services import DELIVERY
from mailflow_web.auth import ADMIN
from mailflow_web.backend import BackendError
from mailflow_web.console import Console
from mailflow_web.timeline import hops

PAGE = 50
QUEUE_STATES = ("", "queued", "deferred", "held", "inflight", "delivered", "bounced", "any")
QUEUE_ACTIONS = ("retry", "hold", "release", "delete")
MAX_SELECTED = 500


def q(s: str) -> str:
    return quote(s, safe="@")


def offset_of(request: Request) -> int:
    v = request.query_params.get("offset", "0")
    return int(v) if v.isdigit() and len(v) < 10 else 0


def router(c: Console) -> APIRouter:
    r = APIRouter(prefix="/admin")

    async def change(request: Request, back: str, done: str, call) -> object:
        """Run one REST change; back to `back` with `done` or the service's refusal."""
        try:
            await call
        except BackendError as exc:
            if exc.status == 503:
                raise
            return c.redirect(request, back, f"refused: {exc.detail}", True)
        return c.redirect(request, back, done)

    # --- overview -------------------------------------------------------------------------------

    @r.get("")
    async def overview(request: Request):
        login = await c.require(request, ADMIN)
        counts = await c.backend.queue.get("/queue/counts")
        domains = await c.backend.store.get("/admin/domains", limit=1)
        users = await c.backend.store.get("/admin/users", limit=1)
        return c.page(request, "admin_overview.html", login, counts=counts, domains=domains["total"], users=users["total"])

    # --- users ----------------------------------------------------------------------------------

    @r.get("/users")
    async def users(request: Request):
        login = await c.require(request, ADMIN)
        domain, offset = request.query_params.get("domain", "")[:253], offset_of(request)
        page = await c.backend.store.get("/admin/users", domain=domain or None, offset=offset, limit=PAGE)
        return c.page(request, "admin_users.html", login, page=page, domain=domain, offset=offset, size=PAGE)

    @r.post("/users")
    async def user_create(request: Request):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        address, password = form.get("address", "").strip(), form.get("password", "")
        quota = form.get("quota", "").strip()
        if not address or not password:
            return c.redirect(request, "/admin/users", "an address and a password are needed", True)
        if quota and not quota.isdigit():
            return c.redirect(request, "/admin/users", "the quota is a number of bytes", True)
        body = {"address": address, "password": password, "quota_bytes": int(quota) if quota else None}
        return await change(request, "/admin/users", f"user {address} created", c.backend.store.post("/admin/users", body))

    @r.get("/users/{address}")
    async def user_page(request: Request, address: str):
        login = await c.require(request, ADMIN)
        user = await c.backend.store.get(f"/admin/users/{q(address)}")
        return c.page(request, "admin_user.html", login, user=user)

    @r.post("/users/{address}/{action}")
    async def user_action(request: Request, address: str, action: str):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        path, back = f"/admin/users/{q(address)}", f"/admin/users/{q(address)}"
        store = c.backend.store
        match action:
            case "disable" | "enable":
                return await change(request, back, f"{address}: {action}d", store.post(f"{path}/{action}"))
            case "quota":
                v = form.get("quota", "").strip()
                if not v.isdigit() or len(v) > 18:
                    return c.redirect(request, back, "the quota is a number of bytes (0: unlimited)", True)
                return await change(request, back, "quota set", store.put(f"{path}/quota", {"quota_bytes": int(v) or None}))
            case "password":
                pw = form.get("password", "")
                if not pw or pw != form.get("again", ""):
                    return c.redirect(request, back, "the passwords differ (or are empty)", True)
                return await change(request, back, "password reset", store.put(f"{path}/password", {"password": pw}))
            case "role":
                return await change(request, back, "role set", store.put(f"{path}/role", {"role": form.get("role", "")}))
            case "delete":
                if form.get("confirm", "") != address:
                    return c.redirect(request, back, f"not deleted: type {address} to confirm", True)
                return await change(request, "/admin/users", f"user {address} deleted", store.delete(path))
        raise HTTPException(404, "no such action")

    # --- domains --------------------------------------------------------------------------------

    @r.get("/domains")
    async def domains(request: Request):
        login = await c.require(request, ADMIN)
        offset = offset_of(request)
        page = await c.backend.store.get("/admin/domains", offset=offset, limit=PAGE)
        return c.page(request, "admin_domains.html", login, page=page, offset=offset, size=PAGE)

    @r.post("/domains")
    async def domain_create(request: Request):
        login = await c.require(request, ADMIN)
        name = (await c.form(request, login)).get("name", "").strip()
        return await change(request, "/admin/domains", f"domain {name} added", c.backend.store.post("/admin/domains", {"name": name}))

    @r.post("/domains/{name}/delete")
    async def domain_delete(request: Request, name: str):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        if form.get("confirm", "") != name:
            return c.redirect(request, "/admin/domains", f"not deleted: type {name} to confirm", True)
        force = "true" if form.get("force") == "on" else None
        return await change(request, "/admin/domains", f"domain {name} deleted", c.backend.store.delete(f"/admin/domains/{q(name)}", force=force))

    # --- aliases --------------------------------------------------------------------------------

    @r.get("/aliases")
    async def aliases(request: Request):
        login = await c.require(request, ADMIN)
        domain, offset = request.query_params.get("domain", "")[:253], offset_of(request)
        page = await c.backend.store.get("/admin/aliases", domain=domain or None, offset=offset, limit=PAGE)
        return c.page(request, "admin_aliases.html", login, page=page, domain=domain, offset=offset, size=PAGE)

    @r.post("/aliases")
    async def alias_create(request: Request):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        address = form.get("address", "").strip()
        targets = [t for t in form.get("targets", "").replace(",", " ").split() if t][:100]
        body = {"address": address, "targets": targets}
        return await change(request, "/admin/aliases", f"alias {address} added", c.backend.store.post("/admin/aliases", body))

    @r.post("/aliases/delete")
    async def alias_delete(request: Request):
        login = await c.require(request, ADMIN)
        address = (await c.form(request, login)).get("address", "")
        return await change(request, "/admin/aliases", f"alias {address} deleted", c.backend.store.delete(f"/admin/aliases/{q(address)}"))

    # --- DKIM and DNS records ---------------------------------------------------------------------

    @r.get("/dkim")
    async def dkim(request: Request):
        login = await c.require(request, ADMIN)
        domain = request.query_params.get("domain", "")[:253]
        keys = await c.backend.store.get("/admin/dkim", domain=domain or None)
        lines: list[str] = []
        if domain:
            host = lookup("MAILFLOW_HOSTNAME") or "localhost"
            try:
                sts = served_policy(host)
            except typer.Exit:
                sts = None
            parsed = [DkimKeyPublic.model_validate(k) for k in keys]
            lines = records(domain, host, parsed, "quarantine", lookup(DELIVERY.var("source_address")) or "", sts)
            lines += [e if isinstance(e, str) else e.line() for e in dane(host, lookup("MAILFLOW_TLS_CERT") or "")]
        return c.page(request, "admin_dkim.html", login, keys=keys, domain=domain, lines=lines)

    @r.post("/dkim")
    async def dkim_create(request: Request):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        domain, selector = form.get("domain", "").strip(), form.get("selector", "").strip() or None
        back = "/admin/dkim?" + urlencode({"domain": domain})
        body = {"domain": domain, "selector": selector}
        return await change(request, back, "key set made: publish its records, then activate it", c.backend.store.post("/admin/dkim", body))

    @r.post("/dkim/{domain}/{selector}/{action}")
    async def dkim_action(request: Request, domain: str, selector: str, action: str):
        login = await c.require(request, ADMIN)
        await c.form(request, login)
        back = "/admin/dkim?" + urlencode({"domain": domain})
        path = f"/admin/dkim/{q(domain)}/{q(selector)}"
        if action == "activate":
            return await change(request, back, f"{selector} signs now", c.backend.store.post(f"{path}/activate"))
        if action == "remove":
            return await change(request, back, f"{selector} removed", c.backend.store.delete(path))
        raise HTTPException(404, "no such action")

    # --- the queue ------------------------------------------------------------------------------

    def queue_filters(request: Request) -> dict[str, str]:
        p = request.query_params
        f = {k: p.get(k, "")[:320].strip() for k in ("state", "domain", "sender", "recipient", "message_id", "min_age", "max_age")}
        if f["state"] not in QUEUE_STATES:
            f["state"] = ""
        for k in ("min_age", "max_age"):
            if not f[k].isdigit() or len(f[k]) > 9:
                f[k] = ""
        return f

    @r.get("/queue")
    async def queue(request: Request):
        login = await c.require(request, ADMIN)
        f, offset = queue_filters(request), offset_of(request)
        page = await c.backend.queue.get("/queue", offset=offset, limit=PAGE, **f)
        counts = await c.backend.queue.get("/queue/counts")
        here = urlencode({k: v for k, v in f.items() if v})
        return c.page(request, "admin_queue.html", login, page=page, f=f, counts=counts, states=QUEUE_STATES,
                      offset=offset, size=PAGE, here=here)

    @r.post("/queue")
    async def queue_action(request: Request):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        action, back = form.get("action", ""), "/admin/queue?" + form.get("back", "")[:2000]
        if action == "flush":
            return await change(request, back, "every deferred recipient is due now", c.backend.queue.post("/queue/flush"))
        if action not in QUEUE_ACTIONS:
            raise HTTPException(400, "no such action")
        ids = form.getlist("id")[:MAX_SELECTED]
        if form.get("from_message") and len(ids) == 1 and action != "delete":
            back = f"/admin/message/{q(ids[0])}"
        if not ids:
            return c.redirect(request, back, "no message selected", True)
        done, refused = 0, []
        for queue_id in ids:
            try:
                if action == "delete":
                    await c.backend.queue.delete(f"/queue/{q(queue_id)}")
                else:
                    await c.backend.queue.post(f"/queue/{q(queue_id)}/{action}")
                done += 1
            except BackendError as exc:
                if exc.status == 503:
                    raise
                refused.append(f"{queue_id}: {exc.detail}")
        text = f"{action}: {done} message(s)" + (f"; refused {'; '.join(refused[:5])}" if refused else "")
        return c.redirect(request, back, text, bool(refused))

    # --- follow one message ------------------------------------------------------------------------

    @r.get("/message")
    async def message_search(request: Request):
        """By queue id (exact), Message-ID (exact, with or without <>), or every message the queue keeps from or
        to an address."""
        login = await c.require(request, ADMIN)
        needle = request.query_params.get("q", "").strip()[:320]
        found: list[dict] = []
        if needle and "@" not in needle and needle.replace("-", "").isalnum() and len(needle) <= 32:
            try:
                await c.backend.queue.get(f"/queue/{needle}")
                return c.redirect(request, f"/admin/message/{needle}")
            except BackendError as exc:
                if exc.status != 404:
                    raise
        elif needle:
            seen = set()
            keys = ("message_id",) if needle.startswith("<") else ("sender", "recipient", "message_id")
            for key in keys:
                page = await c.backend.queue.get("/queue", state="any", limit=PAGE, **{key: needle})
                for m in page["items"]:
                    if m["queue_id"] not in seen:
                        seen.add(m["queue_id"])
                        found.append(m)
            found.sort(key=lambda m: m["received_at"], reverse=True)
        return c.page(request, "admin_search.html", login, needle=needle, found=found)

    @r.get("/message/{queue_id}")
    async def message(request: Request, queue_id: str):
        login = await c.require(request, ADMIN)
        if not queue_id.replace("-", "").isalnum() or len(queue_id) > 32:
            raise HTTPException(404, "no such queue id")
        m = await c.backend.queue.get(f"/queue/{queue_id}")
        steps, span = hops(await c.backend.queue.get(f"/trace/{queue_id}"))
        headers = await c.backend.queue.get(f"/queue/{queue_id}/headers")
        return c.page(request, "admin_message.html", login, m=m, hops=steps, span=span, headers=headers)

    # --- dead letters -----------------------------------------------------------------------------

    @r.get("/dead")
    async def dead(request: Request):
        login = await c.require(request, ADMIN)
        after = offset_of(request)
        page = await c.backend.queue.get("/dead", after=after, limit=PAGE)
        return c.page(request, "admin_dead.html", login, page=page, after=after)

    @r.post("/dead")
    async def dead_action(request: Request):
        login = await c.require(request, ADMIN)
        form = await c.form(request, login)
        action, seq = form.get("action", ""), form.get("seq", "")
        if action == "retry-all":
            return await change(request, "/admin/dead", "every letter that can go back was retried", c.backend.queue.post("/dead/retry"))
        if not seq.isdigit() or len(seq) > 18:
            raise HTTPException(400, "no letter given")
        if action == "retry":
            return await change(request, "/admin/dead", f"letter {seq} retried", c.backend.queue.post(f"/dead/{seq}/retry"))
        if action == "delete":
            return await change(request, "/admin/dead", f"letter {seq} deleted", c.backend.queue.delete(f"/dead/{seq}"))
        raise HTTPException(400, "no such action")

    return r
