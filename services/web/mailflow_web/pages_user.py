"""Logins (users' and admins') and a user's own page: quota use and a password change.

A login asks the store (`authenticate`) and is throttled per client (mailflow.throttle): a blocked client
gets 429 without the store being asked; a failure waits the throttle's delay before its answer. An admin
login also needs the admin role (`mailflow user role ADDRESS admin`); a plain user is refused there
exactly as a wrong password is. A user's page reads and changes only the logged-in address: no handler
here takes an address from the request.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse

from mailflow_web import metrics
from mailflow_web.auth import ADMIN, COOKIE, COOKIE_PATH, PRE_COOKIE, USER
from mailflow_web.backend import BackendError
from mailflow_web.console import Console


def q(address: str) -> str:
    return quote(address, safe="@")


def router(c: Console) -> APIRouter:
    r = APIRouter()

    def login_form(request: Request, kind: str, error: str = "", status: int = 200):
        nonce, cookie = c.sessions.new_pre()
        response = c.page(
            request, "login.html", None, status=status, kind=kind, error=error, login_csrf=c.signer.csrf(nonce)
        )
        c.sessions.set_cookie(response, request, PRE_COOKIE, cookie)
        return response

    async def do_login(request: Request, kind: str):
        form = await c.form(request, None)
        ip = request.client.host if request.client else "0.0.0.0"
        if c.throttle.blocked(ip):
            metrics.LOGINS.labels(kind, "throttled").inc()
            return login_form(request, kind, "too many failed logins from your address: try again later", 429)
        address, password = form.get("address", "").strip(), form.get("password", "")
        principal = None
        if address and password and len(address) <= 320 and len(password) <= 1024:
            principal = await c.backend.authenticate(address, password)
        if principal is not None and kind == ADMIN:
            user = await c.backend.store.get(f"/admin/users/{q(principal['address'])}")
            if user.get("role") != ADMIN:
                principal = None
        if principal is None:
            metrics.LOGINS.labels(kind, "failed").inc()
            await asyncio.sleep(c.throttle.failed(ip))
            return login_form(request, kind, "wrong address or password", 401)
        metrics.LOGINS.labels(kind, "ok").inc()
        cookie, _ = c.sessions.issue(kind, principal["address"], principal["token"])
        response = RedirectResponse("/admin" if kind == ADMIN else "/me", status_code=303)
        c.sessions.set_cookie(response, request, COOKIE[kind], cookie, path=COOKIE_PATH[kind], max_age=c.sessions.ttl)
        response.delete_cookie(PRE_COOKIE, path="/")
        return response

    @r.get("/")
    async def home(request: Request):
        return RedirectResponse("/me", status_code=303)

    @r.get("/login")
    async def user_login_form(request: Request):
        return login_form(request, USER)

    @r.post("/login")
    async def user_login(request: Request):
        return await do_login(request, USER)

    @r.get("/admin/login")
    async def admin_login_form(request: Request):
        return login_form(request, ADMIN)

    @r.post("/admin/login")
    async def admin_login(request: Request):
        return await do_login(request, ADMIN)

    async def logout(request: Request, kind: str):
        login = c.sessions.read(request, kind)
        if login is not None:
            await c.form(request, login)
        response = RedirectResponse("/admin/login" if kind == ADMIN else "/login", status_code=303)
        c.end_session(request, response, kind)
        return response

    @r.post("/logout")
    async def user_logout(request: Request):
        return await logout(request, USER)

    @r.post("/admin/logout")
    async def admin_logout(request: Request):
        return await logout(request, ADMIN)

    @r.get("/me")
    async def me(request: Request):
        login = await c.require(request, USER)
        user = await c.backend.store.get(f"/admin/users/{q(login.address)}")
        quota = user.get("quota_bytes")
        percent = min(100, round(100 * user["used_bytes"] / quota)) if quota else None
        return c.page(request, "me.html", login, user=user, percent=percent)

    @r.post("/me/password")
    async def me_password(request: Request):
        login = await c.require(request, USER)
        form = await c.form(request, login)
        current, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
        if not new or new != again:
            return c.redirect(request, "/me", "the new password and its repetition differ (or are empty)", True)
        if len(new) > 1024:
            raise HTTPException(400, "a password has at most 1024 characters")
        ip = request.client.host if request.client else "0.0.0.0"
        if c.throttle.blocked(ip):
            raise HTTPException(429, "too many failed logins from your address: try again later")
        principal = await c.backend.authenticate(login.address, current)
        if principal is None:
            await asyncio.sleep(c.throttle.failed(ip))
            return c.redirect(request, "/me", "the current password is wrong", True)
        try:
            await c.backend.store.put(f"/admin/users/{q(login.address)}/password", {"password": new})
        except BackendError as exc:
            return c.redirect(request, "/me", exc.detail, True)
        # The change ended every session of the old password, this one's too: log in with the new one.
        fresh = await c.backend.authenticate(login.address, new)
        response = c.redirect(request, "/me", "password changed")
        if fresh is not None:
            cookie, _ = c.sessions.issue(USER, fresh["address"], fresh["token"])
            c.sessions.set_cookie(response, request, COOKIE[USER], cookie, path="/", max_age=c.sessions.ttl)
        return response

    return r
