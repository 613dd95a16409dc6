"""A user's own Sieve scripts (/me/filters) and vacation reply (/me/vacation).

Every call goes to the store's /access/sieve/* with the logged-in user's own store session token
(Backend.sieve), so the store scopes it to that user: no handler here takes a user from the request,
and another user's script name is simply "no script". A script is checked with
mailflow.sieve.script.compile, the checker ManageSieve and delivery use, before it is stored: one that
does not parse is shown again with the checker's text ("line 3: ...") and not stored. The store's limits
(RFC 5804 QUOTA/MAXSIZE, QUOTA/MAXSCRIPTS: "maxsize: ...", "maxscripts: ...") and its refusals
(deleting the active script) come back as the store's text on the page. Every POST carries the
session's CSRF token (Console.form); a script form is at most MAX_SCRIPT_FORM octets (413), every
other form the console's max_request_bytes. The vacation script is written by mailflow_web.vacation
(see there why it `include`s the script that was active).
"""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, HTTPException, Request

from mailflow.sieve.script import SieveError, compile
from mailflow_web import vacation
from mailflow_web.auth import USER, Login
from mailflow_web.backend import BackendError
from mailflow_web.console import Console, LoginRequired

# A script of the store's default limit (64 KiB) URL-encoded (at most 3 octets per octet), plus the
# other fields. The store's own limit decides what is kept.
MAX_SCRIPT_FORM = 256 * 1024
MAX_NAME = 255  # octets, the store's limit (RFC 5804 §1.6)


def store_refusal(exc: BackendError) -> str:
    """The store's refusal in words a user can act on."""
    if exc.detail.startswith("maxsize:"):
        return "the store refused the script, it is too large (" + exc.detail.removeprefix("maxsize:").strip() + ")"
    if exc.detail.startswith("maxscripts:"):
        return "the store refused the script, you have too many (" + exc.detail.removeprefix("maxscripts:").strip() + ")"
    return exc.detail


def check(script: bytes) -> str | None:
    """The checker's text for a script delivery would not run; None for one it would."""
    try:
        compile(script, MAX_SCRIPT_FORM)
    except SieveError as exc:
        return str(exc)[:500]
    return None


def router(c: Console) -> APIRouter:
    r = APIRouter()

    async def sieve(login: Login, op: str, **body):
        try:
            return await c.backend.sieve(login.store_token, op, body)
        except BackendError as exc:
            if exc.status == 401:  # the store ended the session since c.require asked
                raise LoginRequired(USER) from None
            raise

    async def scripts(login: Login) -> list[tuple[str, bool]]:
        return [(str(n), bool(a)) for n, a in await sieve(login, "list")]

    async def script_of(login: Login, name: str) -> bytes:
        return base64.b64decode((await sieve(login, "get", name=name))["script"])

    async def form_vacation(login: Login, listed: list[tuple[str, bool]]) -> vacation.Settings | None:
        """The settings of the user's vacation script if this form made it, else None."""
        if vacation.NAME not in dict(listed):
            return None
        return vacation.read(await script_of(login, vacation.NAME))

    def name_of(form) -> str:
        name = form.get("name", "")
        if not name or len(name.encode()) > MAX_NAME:
            raise HTTPException(400, f"a script name is 1 to {MAX_NAME} octets")
        return name

    @r.get("/me/filters")
    async def filters(request: Request):
        login = await c.require(request, USER)
        listed = await scripts(login)
        return c.page(request, "me_filters.html", login, scripts=listed, vacation_name=vacation.NAME)

    @r.get("/me/filters/edit")
    async def edit(request: Request, name: str = ""):
        login = await c.require(request, USER)
        if len(name.encode()) > MAX_NAME:
            raise HTTPException(400, f"a script name is 1 to {MAX_NAME} octets")
        text = (await script_of(login, name)).decode("utf-8", "replace") if name else ""
        return c.page(request, "me_filter.html", login, script_name=name, text=text, new=not name, error="")

    @r.post("/me/filters/save")
    async def save(request: Request):
        login = await c.require(request, USER)
        form = await c.form(request, login, MAX_SCRIPT_FORM)
        name, text, new = name_of(form), form.get("script", ""), form.get("new") == "1"

        def again(error: str, status: int):
            return c.page(request, "me_filter.html", login, status=status, script_name=name, text=text, new=new, error=error)

        if new and name in dict(await scripts(login)):
            return again(f"you have a script named {name!r} already: edit that one or choose another name", 409)
        data = text.encode("utf-8")
        error = await asyncio.to_thread(check, data)
        if error is not None:
            return again(f"not saved: {error}", 422)
        try:
            await sieve(login, "put", name=name, script=base64.b64encode(data).decode())
        except BackendError as exc:
            if exc.status == 503:
                raise
            return again("not saved: " + store_refusal(exc), exc.status)
        return c.redirect(request, "/me/filters", f"script {name} saved")

    @r.post("/me/filters/delete")
    async def delete(request: Request):
        login = await c.require(request, USER)
        form = await c.form(request, login)
        name = name_of(form)
        if form.get("confirm", "") != name:
            return c.redirect(request, "/me/filters", f"not deleted: type the name {name!r} to confirm", True)
        listed = await scripts(login)
        held = await form_vacation(login, listed)
        if held is not None and held.include == name and dict(listed).get(vacation.NAME):
            return c.redirect(request, "/me/filters", f"not deleted: your vacation reply includes {name!r}; "
                              "turn the reply off first", True)  # fmt: skip
        try:
            await sieve(login, "delete", name=name)
        except BackendError as exc:
            if exc.status == 409:
                return c.redirect(request, "/me/filters", f"not deleted: {name!r} is active; deactivate it first", True)
            if exc.status == 404:
                return c.redirect(request, "/me/filters", f"you have no script {name!r}", True)
            raise
        return c.redirect(request, "/me/filters", f"script {name} deleted")

    @r.post("/me/filters/activate")
    async def activate(request: Request):
        login = await c.require(request, USER)
        form = await c.form(request, login)
        if form.get("action") == "deactivate":
            await sieve(login, "activate", name="")
            return c.redirect(request, "/me/filters", "no script is active now: mail is filed into your inbox")
        name = name_of(form)
        error = await asyncio.to_thread(check, await script_of(login, name))
        if error is not None:
            return c.redirect(request, "/me/filters", f"not activated: {name!r} does not check: {error}", True)
        await sieve(login, "activate", name=name)
        return c.redirect(request, "/me/filters", f"script {name} is active now")

    # --- vacation --------------------------------------------------------------------------------

    async def vacation_state(login: Login) -> dict:
        listed = await scripts(login)
        active = next((n for n, a in listed if a), None)
        exists = vacation.NAME in dict(listed)
        current = await form_vacation(login, listed)
        on = active == vacation.NAME and current is not None
        return {
            "settings": current or vacation.Settings(),
            "on": on,
            "foreign": exists and current is None,  # a "vacation" script this form did not write
            # the filters the reply includes (on), or would include (off: the script active now)
            "other": current.include if on and current else (active if active != vacation.NAME else None),
            "active": active,
            "names": [n for n, _ in listed],
            "script_name": vacation.NAME,
            "max_days": vacation.MAX_VACATION_DAYS,
        }

    @r.get("/me/vacation")
    async def vacation_form(request: Request):
        login = await c.require(request, USER)
        return c.page(request, "me_vacation.html", login, error="", **await vacation_state(login))

    @r.post("/me/vacation")
    async def vacation_save(request: Request):
        login = await c.require(request, USER)
        form = await c.form(request, login)
        state = await vacation_state(login)
        if state["foreign"]:
            raise HTTPException(409, f"you have a script named {vacation.NAME!r} that this form did not write: "
                                     "rename or delete it under Filters first")  # fmt: skip
        if form.get("action") == "off":
            if state["on"]:
                back = state["settings"].include or ""
                await sieve(login, "activate", name=back)
                return c.redirect(request, "/me/vacation", "vacation reply off" + (f"; {back!r} is active again" if back else ""))
            return c.redirect(request, "/me/vacation", "the vacation reply was not on")
        active = state["active"]
        include = state["settings"].include if active == vacation.NAME else active
        if include not in state["names"]:  # deleted since (over ManageSieve): including it would fail
            include = None
        try:
            wanted = vacation.parse_form(form.get("subject", ""), form.get("message", ""), form.get("days", ""),
                                         form.get("addresses", ""), include)  # fmt: skip
        except vacation.FormError as exc:
            return vacation_again(request, login, state, form, str(exc))
        script = vacation.build(wanted)
        error = await asyncio.to_thread(check, script)
        if error is not None:
            return vacation_again(request, login, state, form, f"not saved: {error}")
        try:
            await sieve(login, "put", name=vacation.NAME, script=base64.b64encode(script).decode())
        except BackendError as exc:
            if exc.status == 503:
                raise
            return vacation_again(request, login, state, form, "not saved: " + store_refusal(exc))
        await sieve(login, "activate", name=vacation.NAME)
        kept = f"; your filters in {include!r} still run after it" if include else ""
        return c.redirect(request, "/me/vacation", "vacation reply on" + kept)

    def vacation_again(request: Request, login: Login, state: dict, form, error: str):
        typed = vacation.Settings(form.get("subject", "")[:1000], form.get("message", "")[:20000], 0,
                                  (form.get("addresses", "")[:10000],))  # fmt: skip
        state = state | {"settings": typed, "typed_days": form.get("days", "")[:10]}
        return c.page(request, "me_vacation.html", login, status=422, error=error, **state)

    return r
