"""A user's filters and vacation reply, through FastAPI's TestClient against the real mailbox-store
(tests/support/store.py's LocalStore: its REST API on 127.0.0.1, SQLite).

Scripts are listed, created, edited, checked (a broken one is shown with the checker's line and not
stored), activated, deactivated and deleted (with confirmation); the store's limits come back in words;
the vacation form writes a script that the checker reads back to exactly the text typed, hostile text
included, and keeps the filters that were active; every POST needs the CSRF token; one user never
reaches another's scripts.
"""

from __future__ import annotations

import asyncio
import html
import re

import pytest
from fastapi.testclient import TestClient

from mailflow.sieve.script import Include, Vacation, compile
from mailflow_web.app import make_app
from mailflow_web.backend import Backend
from tests.support.store import SERVICE_TOKEN, LocalStore

from .test_access import csrf_of, login, settings

FILTER = 'require "fileinto";\r\nif header :contains "subject" "[list]" { fileinto "Lists"; }\r\n'


@pytest.fixture(scope="module")
def local_store():
    with LocalStore.running() as s:
        yield s


@pytest.fixture
def store(local_store):
    return local_store.fresh(("bob@example.test", "bob-pw"), ("carol@example.test", "carol-pw"))


@pytest.fixture
def client(local_store, store):
    backend = Backend(local_store.url, "http://127.0.0.1:9", "admin-token-for-tests", SERVICE_TOKEN)
    with TestClient(make_app(settings(), backend), base_url="http://console.test", follow_redirects=False) as c:
        yield c


def scripts_of(store, address: str, password: str) -> dict[str, tuple[bytes, bool]]:
    async def read():
        p = await store.authenticate(address, password)
        return {n: (await store.get_script(p, n), a) for n, a in await store.list_scripts(p)}

    return asyncio.run(read())


def put(client: TestClient, name: str, script: str, new: bool = True):
    token = csrf_of(client.get("/me/filters").text)
    return client.post("/me/filters/save", data={"csrf": token, "name": name, "script": script, "new": "1" if new else "0"})


def post(client: TestClient, path: str, **data):
    return client.post(path, data={"csrf": csrf_of(client.get("/me/filters").text)} | data)


def flash(client: TestClient, path: str) -> str:
    m = re.search(r'<p class="flash [a-z]+" role="status">(.*?)</p>', client.get(path).text, re.S)
    return html.unescape(m.group(1)) if m else ""


def textarea(page: str, name: str) -> str:
    """The text a browser shows in the textarea (it drops one line break right after the start tag)."""
    m = re.search(rf'<textarea name="{name}"[^>]*>\n(.*?)</textarea>', page, re.S)
    assert m, f"no textarea {name}"
    return html.unescape(m.group(1))


def test_a_user_creates_edits_activates_deactivates_and_deletes_a_script(client, store):
    login(client, "bob@example.test", "bob-pw")
    assert "You have no scripts" in client.get("/me/filters").text
    r = put(client, "lists", FILTER)
    assert r.status_code == 303 and flash(client, "/me/filters") == "script lists saved"
    assert scripts_of(store, "bob@example.test", "bob-pw") == {"lists": (FILTER.encode(), False)}
    page = client.get("/me/filters/edit", params={"name": "lists"}).text
    assert textarea(page, "script") == FILTER
    edited = FILTER + "keep;\r\n"
    assert put(client, "lists", edited, new=False).status_code == 303
    assert post(client, "/me/filters/activate", name="lists", action="activate").status_code == 303
    assert scripts_of(store, "bob@example.test", "bob-pw") == {"lists": (edited.encode(), True)}
    assert "active" in client.get("/me/filters").text
    # the active script cannot go; a delete needs its name typed
    post(client, "/me/filters/delete", name="lists", confirm="lists")
    assert "is active; deactivate it first" in flash(client, "/me/filters")
    assert post(client, "/me/filters/activate", name="lists", action="deactivate").status_code == 303
    assert scripts_of(store, "bob@example.test", "bob-pw") == {"lists": (edited.encode(), False)}
    post(client, "/me/filters/delete", name="lists", confirm="list")
    assert "type the name" in flash(client, "/me/filters")
    assert "lists" in scripts_of(store, "bob@example.test", "bob-pw")
    post(client, "/me/filters/delete", name="lists", confirm="lists")
    assert flash(client, "/me/filters") == "script lists deleted"
    assert scripts_of(store, "bob@example.test", "bob-pw") == {}


def test_a_broken_script_is_shown_with_its_line_and_not_stored(client, store):
    login(client, "bob@example.test", "bob-pw")
    broken = 'require "fileinto";\r\n\r\nfilinto "x";\r\n'
    r = put(client, "bad", broken)
    assert r.status_code == 422 and "not saved: line 3:" in html.unescape(r.text)
    assert "filinto" in r.text  # the text comes back to be fixed
    r = put(client, "bad", 'require "notify";\r\n')
    assert r.status_code == 422 and "unsupported extension: notify" in r.text
    assert scripts_of(store, "bob@example.test", "bob-pw") == {}
    # a new script may not silently replace one of the same name
    put(client, "one", "keep;\r\n")
    r = put(client, "one", "discard;\r\n")
    assert r.status_code == 409 and "already" in r.text
    assert scripts_of(store, "bob@example.test", "bob-pw")["one"][0] == b"keep;\r\n"


def test_the_stores_limits_come_back_in_words(client, store, local_store):
    login(client, "bob@example.test", "bob-pw")
    big = "# " + "x" * local_store.settings.sieve_max_script_bytes + "\r\nkeep;\r\n"
    r = put(client, "big", big)
    assert r.status_code == 507 and "it is too large" in r.text
    for i in range(local_store.settings.sieve_max_scripts):
        assert put(client, f"s{i}", "keep;\r\n").status_code == 303
    r = put(client, "one-more", "keep;\r\n")
    assert r.status_code == 507 and "you have too many" in r.text
    assert len(scripts_of(store, "bob@example.test", "bob-pw")) == local_store.settings.sieve_max_scripts


def test_another_users_scripts_are_out_of_reach(client, store):
    login(client, "carol@example.test", "carol-pw")
    assert put(client, "secret", 'discard;\r\n# carol private\r\n').status_code == 303
    login(client, "bob@example.test", "bob-pw")
    assert "secret" not in client.get("/me/filters").text
    r = client.get("/me/filters/edit", params={"name": "secret"})
    assert r.status_code == 404 and "carol private" not in r.text
    post(client, "/me/filters/delete", name="secret", confirm="secret")
    assert "you have no script" in flash(client, "/me/filters")
    r = post(client, "/me/filters/activate", name="secret", action="activate")
    assert r.status_code == 404
    # a smuggled address changes nothing: bob's save lands in bob's scripts
    token = csrf_of(client.get("/me/filters").text)
    client.post("/me/filters/save", data={"csrf": token, "name": "secret", "script": "keep;\r\n", "new": "1",
                                          "address": "carol@example.test"})  # fmt: skip
    assert scripts_of(store, "carol@example.test", "carol-pw") == {"secret": (b'discard;\r\n# carol private\r\n', False)}
    assert scripts_of(store, "bob@example.test", "bob-pw") == {"secret": (b"keep;\r\n", False)}


def test_every_post_needs_the_csrf_token(client, store):
    login(client, "bob@example.test", "bob-pw")
    put(client, "one", "keep;\r\n")
    for path, data in [("/me/filters/save", {"name": "two", "script": "keep;", "new": "1"}),
                       ("/me/filters/delete", {"name": "one", "confirm": "one"}),
                       ("/me/filters/activate", {"name": "one", "action": "activate"}),
                       ("/me/vacation", {"action": "on", "message": "away", "days": "7"})]:  # fmt: skip
        for token in (None, "forged"):
            r = client.post(path, data=data | ({"csrf": token} if token else {}))
            assert r.status_code == 403, path
    assert scripts_of(store, "bob@example.test", "bob-pw") == {"one": (b"keep;\r\n", False)}


def test_pages_need_a_users_login(client):
    for page in ["/me/filters", "/me/filters/edit", "/me/vacation"]:
        assert client.get(page).headers["location"] == "/login"
    assert client.post("/me/filters/save", data={"name": "x", "script": "keep;"}).status_code == 401


def vacation_post(client: TestClient, **fields):
    token = csrf_of(client.get("/me/vacation").text)
    return client.post("/me/vacation", data={"csrf": token, "action": "on", "days": "7", "subject": "",
                                             "addresses": "", "message": "away"} | fields)  # fmt: skip


def test_the_vacation_form_round_trip(client, store):
    login(client, "bob@example.test", "bob-pw")
    assert "The reply is <b>off</b>" in client.get("/me/vacation").text
    r = vacation_post(client, subject="Away", message="Back on Monday.\r\nBob", days="10",
                      addresses="bob.smith@example.test\r\nb@example.test")  # fmt: skip
    assert r.status_code == 303 and flash(client, "/me/vacation") == "vacation reply on"
    script, active = scripts_of(store, "bob@example.test", "bob-pw")["vacation"]
    assert active
    (vac,) = compile(script).commands
    assert vac == Vacation("Back on Monday.\r\nBob", 10, "Away", None, ("bob.smith@example.test", "b@example.test"))
    page = client.get("/me/vacation").text
    assert "The reply is <b>on</b>" in page and 'value="Away"' in page and 'value="10"' in page
    assert textarea(page, "message") == "Back on Monday.\nBob"
    assert textarea(page, "addresses") == "bob.smith@example.test\nb@example.test"
    assert vacation_post(client, action="off").status_code == 303
    assert scripts_of(store, "bob@example.test", "bob-pw")["vacation"][1] is False
    assert "The reply is <b>off</b>" in client.get("/me/vacation").text


@pytest.mark.parametrize("days", ["0", "366", "7.5", "-1", "", "x"])
def test_vacation_days_are_1_to_365(client, store, days):
    login(client, "bob@example.test", "bob-pw")
    r = vacation_post(client, days=days)
    assert r.status_code == 422 and "days is a whole number from 1 to 365" in r.text
    assert scripts_of(store, "bob@example.test", "bob-pw") == {}


def test_hostile_text_stays_text(client, store):
    login(client, "bob@example.test", "bob-pw")
    message = 'He said "stop";\r\n.\r\nkeep; } discard; # \\" \\\\\r\n..\r\ntext:\r\n$5 ${x}\r\n"\r\n\\'
    subject = 'a "quoted" \\ subject"; discard; "'
    r = vacation_post(client, subject=subject, message=message)
    assert r.status_code == 303
    script, _ = scripts_of(store, "bob@example.test", "bob-pw")["vacation"]
    (vac,) = compile(script).commands  # one vacation command: nothing broke out of its strings
    assert vac.reason == message and vac.subject == subject
    page = client.get("/me/vacation").text
    assert textarea(page, "message") == message.replace("\r\n", "\n")
    # a subject of two lines is refused, not folded
    r = vacation_post(client, subject="a\r\nBcc: x@example.test")
    assert r.status_code == 422 and "one line" in r.text
    r = vacation_post(client, addresses='x@example.test" discard; "')
    assert r.status_code == 422 and "is not a mail address" in html.unescape(r.text)


def test_the_vacation_reply_keeps_the_active_filters(client, store):
    login(client, "bob@example.test", "bob-pw")
    put(client, "lists", FILTER)
    post(client, "/me/filters/activate", name="lists", action="activate")
    page = client.get("/me/vacation").text
    assert "Your script <code>lists</code> is active now" in page
    assert vacation_post(client, message="away").status_code == 303
    assert "your filters in 'lists' still run after it" in flash(client, "/me/vacation")
    scripts = scripts_of(store, "bob@example.test", "bob-pw")
    assert scripts["vacation"][1] and not scripts["lists"][1]
    assert compile(scripts["vacation"][0]).commands[1] == Include("lists")
    # saving again keeps the include; the included script cannot be deleted under it
    assert vacation_post(client, message="still away").status_code == 303
    assert compile(scripts_of(store, "bob@example.test", "bob-pw")["vacation"][0]).commands[1] == Include("lists")
    post(client, "/me/filters/delete", name="lists", confirm="lists")
    assert "your vacation reply includes 'lists'" in flash(client, "/me/filters")
    # off: the filters are the active script again
    vacation_post(client, action="off")
    assert "'lists' is active again" in flash(client, "/me/vacation")
    scripts = scripts_of(store, "bob@example.test", "bob-pw")
    assert scripts["lists"][1] and not scripts["vacation"][1]


def test_a_vacation_script_the_form_did_not_write_is_left_alone(client, store):
    login(client, "bob@example.test", "bob-pw")
    own = 'require "vacation";\r\nvacation "my own";\r\n'
    put(client, "vacation", own)
    assert "that this form did not write" in client.get("/me/vacation").text
    r = vacation_post(client, message="replace it")
    assert r.status_code == 409
    assert scripts_of(store, "bob@example.test", "bob-pw")["vacation"][0] == own.encode()


def test_a_script_deleted_under_the_reply_is_no_longer_included(client, store):
    login(client, "bob@example.test", "bob-pw")
    put(client, "lists", FILTER)
    post(client, "/me/filters/activate", name="lists", action="activate")
    vacation_post(client, message="away")

    async def delete_over_managesieve():  # the store lets an inactive script go, whoever includes it
        await store.delete_script(await store.authenticate("bob@example.test", "bob-pw"), "lists")

    asyncio.run(delete_over_managesieve())
    assert vacation_post(client, message="still away").status_code == 303
    script, active = scripts_of(store, "bob@example.test", "bob-pw")["vacation"]
    assert active and len(compile(script).commands) == 1


def test_the_store_refuses_a_sieve_call_without_a_valid_session(local_store, store):
    from mailflow_web.backend import BackendError

    async def call():
        backend = Backend(local_store.url, "http://127.0.0.1:9", "admin-token-for-tests", SERVICE_TOKEN)
        try:
            await backend.sieve("not-a-session", "list", {})
        finally:
            await backend.close()

    with pytest.raises(BackendError) as refused:
        asyncio.run(call())
    assert refused.value.status == 401  # pages_sieve turns it into "log in again"
