"""The console's FastAPI app: shared pieces of its pages (templates, who is logged in, forms, errors).

`make_app(settings, backend)` builds the app (tests hand it a Backend on real services or on a test
server). Errors become pages in one place (`error_page`): an HTTPException keeps its status and text; a
BackendError shows the service's detail with its status (a 404 of the store is a 404 here, a service
that does not answer a 503); anything else is a 500 "internal error, ref <id>" with the traceback in the
log under the same ref. A page that needs a login it does not have redirects to the login form (GET) or
answers 401 (POST); a user's session on an admin page is a 403.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from mailflow.throttle import LoginThrottle
from mailflow_web.auth import (
    ADMIN,
    COOKIE,
    COOKIE_PATH,
    FLASH_COOKIE,
    USER,
    Login,
    Sessions,
    Signer,
    read_form,
)
from mailflow_web.backend import Backend, BackendError
from mailflow_web.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


class LoginRequired(Exception):
    def __init__(self, kind: str):
        self.kind = kind


class Console:
    """What every page handler needs, built once per app."""

    def __init__(self, settings: Settings, backend: Backend):
        self.settings, self.backend = settings, backend
        self.signer = Signer(settings.session_key.get_secret_value())
        self.sessions = Sessions(self.signer, settings.session_hours, settings.secure_cookies)
        self.throttle = LoginThrottle(
            settings.login_failures_max,
            settings.login_failure_window,
            free=settings.login_failures_free,
            max_delay=settings.login_max_delay,
        )

    # --- who is asking ------------------------------------------------------------------------

    async def login_of(self, request: Request, kind: str) -> Login | None:
        """The request's login of this kind if it still stands (the store says so; an admin still has the role)."""
        login = self.sessions.read(request, kind)
        if login is None:
            return None
        if await self.backend.session_expired(login.store_token):
            return None
        if kind == ADMIN:
            try:
                user = await self.backend.store.get(f"/admin/users/{quote(login.address, safe='@')}")
            except BackendError as exc:
                if exc.status == 404:
                    return None
                raise
            if user.get("role") != ADMIN or user.get("disabled"):
                return None
        return login

    async def require(self, request: Request, kind: str) -> Login:
        login = await self.login_of(request, kind)
        if login is not None:
            return login
        if kind == ADMIN and await self.login_of(request, USER) is not None:
            raise HTTPException(403, "this page is for administrators; you are logged in as a user")
        raise LoginRequired(kind)

    async def form(self, request: Request, login: Login | None, max_bytes: int | None = None) -> FormData:
        """The POSTed form, its CSRF token checked against the session (or the login form's cookie); at
        most `max_bytes` (default: the max_request_bytes setting)."""
        form = await read_form(request, max_bytes or self.settings.max_request_bytes)
        nonce = login.nonce if login else self.sessions.pre_nonce(request)
        if nonce is None or not self.signer.csrf_ok(nonce, form.get("csrf")):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        return form

    # --- answers ------------------------------------------------------------------------------

    def page(self, request: Request, name: str, login: Login | None, status: int = 200, **context) -> HTMLResponse:
        flash = self.signer.unsign("flash", request.cookies.get(FLASH_COOKIE))
        response = templates.TemplateResponse(
            request,
            name,
            {
                "login": login,
                "csrf": self.signer.csrf(login.nonce) if login else "",
                "flash": flash,
                **context,
            },
            status_code=status,
        )
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def redirect(self, request: Request, url: str, message: str = "", error: bool = False) -> RedirectResponse:
        """303 to `url`, with a one-time message shown by the next page."""
        response = RedirectResponse(url, status_code=303)
        if message:
            value = self.signer.sign("flash", {"text": message[:500], "error": error})
            self.sessions.set_cookie(response, request, FLASH_COOKIE, value)
        return response

    def end_session(self, request: Request, response: Response, kind: str) -> None:
        response.delete_cookie(COOKIE[kind], path=COOKIE_PATH[kind], httponly=True, samesite="strict",
                               secure=self.sessions.secure_for(request))


def error_page(request: Request, status: int, text: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "text": text, "login": None, "csrf": "", "flash": None},
        status_code=status,
    )


def install_error_pages(app) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        if request.method == "GET":
            return RedirectResponse("/admin/login" if exc.kind == ADMIN else "/login", status_code=303)
        return error_page(request, 401, "your session has ended: log in again")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(BackendError)
    async def _backend(request: Request, exc: BackendError):
        status = exc.status if exc.status in (400, 403, 404, 409, 413, 422, 503, 507) else 502
        return error_page(request, status, exc.detail)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return error_page(request, 404, "no such page")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        ref = secrets.token_hex(6)
        log.exception("internal error", extra={"ref": ref})
        return error_page(request, 500, f"internal error, ref {ref}")
