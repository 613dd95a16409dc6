"""The console's logins, sessions, CSRF and access rules, through FastAPI's TestClient (an in-memory
store and queue behind it: fakes.py).

A user's session gets 403 on every admin page and can only read and change its own address; an admin
login needs the admin role; every change needs the session's CSRF token; a password change, a disable or
a lost role ends a session at once; logins are throttled; cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from mailflow_web.app import make_app
from mailflow_web.settings import Settings

from .fakes import FakeBackend

ADMIN_PAGES = ["/admin", "/admin/users", "/admin/users/bob@example.test", "/admin/domains", "/admin/aliases",
               "/admin/dkim", "/admin/queue", "/admin/dead"]  # fmt: skip


def settings(**kw) -> Settings:
    return Settings(admin_token="admin-token", service_token="svc", session_key="k" * 32, login_failures_free=2,
                    login_failures_max=4, login_max_delay=0.01, **kw)  # fmt: skip


@pytest.fixture
def backend() -> FakeBackend:
    b = FakeBackend()
    b.store.add("alice@example.test", "alice-pw", role="admin")
    b.store.add("bob@example.test", "bob-pw", quota=10_000)
    b.store.add("carol@example.test", "carol-pw")
    return b


@pytest.fixture
def client(backend) -> TestClient:
    return TestClient(make_app(settings(), backend), base_url="http://console.test", follow_redirects=False)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def login(client: TestClient, address: str, password: str, admin: bool = False):
    path = "/admin/login" if admin else "/login"
    form = client.get(path)
    return client.post(path, data={"csrf": csrf_of(form.text), "address": address, "password": password})


def test_login_sets_a_strict_httponly_cookie_and_shows_the_users_quota(client):
    r = login(client, "bob@example.test", "bob-pw")
    assert r.status_code == 303 and r.headers["location"] == "/me"
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("mf_user=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    page = client.get("/me")
    assert page.status_code == 200 and "bob@example.test" in page.text and "of 10.0 kB" in page.text


def test_secure_cookies_over_https():
    b = FakeBackend()
    b.store.add("bob@example.test", "bob-pw")
    c = TestClient(make_app(settings(), b), base_url="https://console.test", follow_redirects=False)
    r = login(c, "bob@example.test", "bob-pw")
    assert "Secure" in [h for h in r.headers.get_list("set-cookie") if h.startswith("mf_user=")][0]


def test_wrong_password_is_refused(client):
    r = login(client, "bob@example.test", "nope")
    assert r.status_code == 401 and "wrong address or password" in r.text
    assert client.get("/me").status_code == 303


def test_pages_without_a_login_go_to_the_login_form(client):
    assert client.get("/me").headers["location"] == "/login"
    for page in ADMIN_PAGES:
        assert client.get(page).headers["location"] == "/admin/login", page


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_a_users_session_gets_403_on_admin_pages(client, page):
    login(client, "bob@example.test", "bob-pw")
    assert client.get(page).status_code == 403


def test_a_users_session_cannot_change_anything_of_the_admin(client, backend):
    login(client, "bob@example.test", "bob-pw")
    token = csrf_of(client.get("/me").text)
    for path in ["/admin/users/carol@example.test/delete", "/admin/users/carol@example.test/password", "/admin/users"]:
        r = client.post(path, data={"csrf": token, "confirm": "carol@example.test", "password": "x", "again": "x"})
        assert r.status_code == 403, path
    assert "carol@example.test" in backend.store.users and backend.store.users["carol@example.test"]["password"] == "carol-pw"
    assert not [c for c in backend.store.calls if c[0] != "GET"]


def test_a_user_changes_only_their_own_password(client, backend):
    login(client, "bob@example.test", "bob-pw")
    token = csrf_of(client.get("/me").text)
    # No handler takes an address: a smuggled one is ignored.
    r = client.post("/me/password", data={"csrf": token, "current": "bob-pw", "new": "n3w", "again": "n3w", "address": "carol@example.test"})
    assert r.status_code == 303
    assert backend.store.users["bob@example.test"]["password"] == "n3w"
    assert backend.store.users["carol@example.test"]["password"] == "carol-pw"
    assert client.get("/me").status_code == 200  # the console logged the session in again with the new password


def test_password_change_needs_the_current_password(client, backend):
    login(client, "bob@example.test", "bob-pw")
    token = csrf_of(client.get("/me").text)
    r = client.post("/me/password", data={"csrf": token, "current": "wrong", "new": "n3w", "again": "n3w"})
    assert r.status_code == 303 and backend.store.users["bob@example.test"]["password"] == "bob-pw"
    assert "current password is wrong" in client.get("/me").text


def test_every_change_needs_the_csrf_token(client, backend):
    login(client, "bob@example.test", "bob-pw")
    for token in (None, "", "forged"):
        data = {"current": "bob-pw", "new": "x", "again": "x"} | ({"csrf": token} if token is not None else {})
        assert client.post("/me/password", data=data).status_code == 403
    assert backend.store.users["bob@example.test"]["password"] == "bob-pw"
    # the login form too: a token of another form (or none) is refused
    assert client.post("/login", data={"address": "bob@example.test", "password": "bob-pw"}).status_code == 403


def test_a_users_cookie_is_not_an_admins(client):
    r = login(client, "bob@example.test", "bob-pw")
    value = r.cookies["mf_user"]
    client.cookies.set("mf_admin", value, path="/admin")
    assert client.get("/admin").status_code == 403


def test_admin_login_needs_the_admin_role(client):
    r = login(client, "bob@example.test", "bob-pw", admin=True)
    assert r.status_code == 401
    r = login(client, "alice@example.test", "alice-pw", admin=True)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert client.get("/admin").status_code == 200


def test_losing_the_role_or_being_disabled_ends_an_admin_session(client, backend):
    login(client, "alice@example.test", "alice-pw", admin=True)
    assert client.get("/admin/users").status_code == 200
    backend.store.users["alice@example.test"]["role"] = "user"
    assert client.get("/admin/users").status_code == 303
    backend.store.users["alice@example.test"]["role"] = "admin"
    backend.store.users["alice@example.test"]["generation"] += 1  # e.g. its password was reset
    assert client.get("/admin/users").status_code == 303


def test_an_altered_cookie_is_refused(client):
    r = login(client, "bob@example.test", "bob-pw")
    value = r.cookies["mf_user"]
    payload, mac = value.split(".")
    client.cookies.set("mf_user", payload + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"))
    assert client.get("/me").status_code == 303


def test_admin_deletes_a_user_only_with_confirmation(client, backend):
    login(client, "alice@example.test", "alice-pw", admin=True)
    page = client.get("/admin/users/carol@example.test")
    token = csrf_of(page.text)
    r = client.post("/admin/users/carol@example.test/delete", data={"csrf": token, "confirm": "carol"})
    assert r.status_code == 303 and "carol@example.test" in backend.store.users
    r = client.post("/admin/users/carol@example.test/delete", data={"csrf": token, "confirm": "carol@example.test"})
    assert r.status_code == 303 and "carol@example.test" not in backend.store.users


def test_admin_pages_never_show_a_password(client, backend):
    login(client, "alice@example.test", "alice-pw", admin=True)
    for page in ["/admin/users", "/admin/users/bob@example.test"]:
        assert "bob-pw" not in client.get(page).text


def test_logins_are_throttled(client):
    from mailflow_web.metrics import LOGINS

    failed, throttled = LOGINS.labels("user", "failed"), LOGINS.labels("user", "throttled")
    failed_before, throttled_before = failed._value.get(), throttled._value.get()
    for _ in range(4):
        assert login(client, "bob@example.test", "wrong").status_code == 401
    r = login(client, "bob@example.test", "bob-pw")  # right, but the client is blocked now
    assert r.status_code == 429 and "too many failed logins" in r.text
    assert failed._value.get() - failed_before == 4 and throttled._value.get() - throttled_before == 1


def test_a_large_form_is_refused(client):
    form = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(form.text), "address": "a" * 70_000, "password": "x"})
    assert r.status_code == 413 and "too large" in r.text


def test_logout_ends_the_session(client):
    login(client, "bob@example.test", "bob-pw")
    token = csrf_of(client.get("/me").text)
    r = client.post("/logout", data={"csrf": token})
    assert r.status_code == 303
    assert client.get("/me").status_code == 303


def test_unknown_page_is_a_clear_404(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "no such page" in r.text


def test_admin_holds_and_releases_queued_messages(client, backend):
    login(client, "alice@example.test", "alice-pw", admin=True)
    token = csrf_of(client.get("/admin/queue").text)
    r = client.post("/admin/queue", data={"csrf": token, "action": "hold", "id": ["Q1", "Q2"], "back": ""})
    assert r.status_code == 303 and backend.queue.held == {"Q1", "Q2"}
    r = client.post("/admin/queue", data={"csrf": token, "action": "bogus", "id": ["Q1"]})
    assert r.status_code == 400


def test_following_a_message_draws_its_journey(client):
    login(client, "alice@example.test", "alice-pw", admin=True)
    r = client.get("/admin/message", params={"q": "QA1"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/message/QA1"
    page = client.get("/admin/message/QA1").text
    assert page.count('class="hop') == 3 and "again" in page  # the second delivery is a retry
    assert "greylisted &lt;script&gt;" in page and "<script>" not in page.split("</head>")[1]
    assert 'x="0.000"' in page and "1000.0 ms" in page
    assert "&lt;b&gt;hello&lt;/b&gt;" in page and "&lt;m1@example.test&gt;" in page  # headers, escaped
    found = client.get("/admin/message", params={"q": "ann@example.test"}).text
    assert "/admin/message/QA1" in found
    assert client.get("/admin/message/not-an-id!").status_code == 404


def test_the_operate_pages_render(client):
    login(client, "alice@example.test", "alice-pw", admin=True)
    assert "example.test" in client.get("/admin/domains").text
    assert "No aliases." in client.get("/admin/aliases").text
    dkim = client.get("/admin/dkim", params={"domain": "example.test"}).text
    assert "_dmarc.example.test." in dkim and "mailflow dkim keygen example.test" in dkim
    dead = client.get("/admin/dead").text
    assert "boom &lt;x&gt;" in dead and "/admin/message/QA1" in dead
    assert "bob@example.test" in client.get("/admin/users").text
