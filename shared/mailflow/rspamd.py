"""rspamd's HTTP protocol (https://rspamd.com/doc/developers/protocol.html): a message scanned with the
normal worker's `/checkv2`, and learned as spam or ham with the controller's `/learnspam`, `/learnham`.

The envelope travels in request headers (`IP`, `Helo`, `From`, one `Rcpt` per recipient, `Queue-Id`,
`User` for an authenticated sender, `MTA-Name`); the answer is JSON whose `action` is one of ACTIONS.
Failures: anything that is not a well-formed answer in time — connection refused, the timeout, a
status other than 200, a body over MAX_ANSWER or not the JSON described, an action not in ACTIONS —
raises `RspamdUnavailable`, and the caller decides (smtp-ingress fails open or defers, mailbox-store
logs and counts). Nothing here retries or logs. Header values rspamd proposes (milter `add_headers`)
are bounded (MAX_HEADERS, MAX_HEADER_VALUE), names are checked against RFC 5322's field-name
characters and values are refolded, so a broken answer can never inject a line into a message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx

# rspamd's actions (its `actions` config), strongest first
ACTIONS = ("reject", "soft reject", "rewrite subject", "add header", "greylist", "no action")
MAX_ANSWER = 1024 * 1024  # a /checkv2 answer lists symbols; 1 MiB is far above any real one
MAX_HEADERS = 16  # header fields taken from one answer (milter add_headers / remove_headers)
MAX_HEADER_VALUE = 2048  # characters of one proposed value; longer ones are cut
_FIELD_NAME = frozenset(chr(c) for c in range(33, 127)) - {":"}  # RFC 5322 §3.6.8 ftext


class RspamdUnavailable(Exception):
    """rspamd gave no usable answer (down, slow, an error status, a malformed answer)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    ip: str
    helo: str
    mail_from: str  # "" is the null reverse-path
    rcpts: list[str]
    queue_id: str
    user: str | None = None  # the SASL login of an authenticated sender
    mta_name: str = ""  # our hostname


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # one of ACTIONS
    score: float = 0.0
    message: str = ""  # rspamd's smtp_message, if it gave one (never shown to clients verbatim)
    add_headers: list[tuple[str, str]] = field(default_factory=list)  # checked and refolded
    remove_headers: list[str] = field(default_factory=list)


def request_headers(env: Envelope) -> list[tuple[str, str]]:
    """The protocol's envelope headers; `Rcpt` once per recipient. Values are single SMTP tokens
    (addresses, a sanitized HELO), so they hold no CR/LF."""
    out = [("IP", env.ip), ("Helo", env.helo or "unknown"), ("From", env.mail_from), ("Queue-Id", env.queue_id)]
    out += [("Rcpt", r) for r in env.rcpts]
    if env.user:
        out.append(("User", env.user))
    if env.mta_name:
        out.append(("MTA-Name", env.mta_name))
    return out


def _value(v: object) -> str | None:
    """A milter header value: a string, or {"value": str, "order": n}; None if neither."""
    if isinstance(v, dict):
        v = v.get("value")
    if not isinstance(v, str):
        return None
    lines = [part.strip() for part in v[:MAX_HEADER_VALUE].splitlines()]
    return "\r\n\t".join(part for part in lines if part)


def _milter(answer: dict) -> tuple[list[tuple[str, str]], list[str]]:
    milter = answer.get("milter")
    if not isinstance(milter, dict):
        return [], []
    added: list[tuple[str, str]] = []
    adds = milter.get("add_headers")
    if isinstance(adds, dict):
        for name, v in list(adds.items())[:MAX_HEADERS]:
            if not name or len(name) > 64 or not _FIELD_NAME.issuperset(name):
                continue
            for one in (v if isinstance(v, list) else [v])[:MAX_HEADERS]:
                value = _value(one)
                if value and len(added) < MAX_HEADERS:
                    added.append((name, value))
    removes = milter.get("remove_headers")
    removed = []
    if isinstance(removes, dict):
        removed = [n for n in list(removes)[:MAX_HEADERS] if n and len(n) <= 64 and _FIELD_NAME.issuperset(n)]
    return added, removed


def parse_answer(body: bytes) -> Verdict:
    """A /checkv2 answer; RspamdUnavailable if it is not one."""
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise RspamdUnavailable(f"answer is not JSON: {exc}") from None
    if not isinstance(answer, dict) or answer.get("action") not in ACTIONS:
        raise RspamdUnavailable("answer has no known action")
    added, removed = _milter(answer)
    messages = answer.get("messages")
    message = messages.get("smtp_message") if isinstance(messages, dict) else None
    score = answer.get("score")
    return Verdict(
        action=answer["action"],
        score=float(score) if isinstance(score, int | float) else 0.0,
        message=message[:200] if isinstance(message, str) else "",
        add_headers=added,
        remove_headers=removed,
    )


class RspamdClient:
    """One connection pool to one rspamd worker (normal for `check`, controller for `learn`)."""

    def __init__(self, url: str, timeout: float, password: str = "", max_connections: int = 100):
        self.url, self.timeout = url.rstrip("/"), timeout
        self._auth = [("Password", password)] if password else []
        self.http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def _post(self, path: str, message: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
        """Status and body, within `timeout` in all (httpx's own timeouts are per read: an answer
        dribbled a byte at a time would never end). Values go as UTF-8 (SMTPUTF8 addresses)."""
        wire = [(name, value.encode("utf-8", "replace")) for name, value in headers + self._auth]
        try:
            async with asyncio.timeout(self.timeout):
                async with self.http.stream("POST", self.url + path, content=message, headers=wire) as resp:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER:
                            raise RspamdUnavailable(f"answer over {MAX_ANSWER} bytes")
                    return resp.status_code, bytes(body)
        except httpx.HTTPError as exc:
            raise RspamdUnavailable(f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise RspamdUnavailable(f"no answer within {self.timeout} s") from None

    async def check(self, message: bytes, env: Envelope) -> Verdict:
        status, body = await self._post("/checkv2", message, request_headers(env))
        if status != 200:
            raise RspamdUnavailable(f"/checkv2 answered {status}")
        return parse_answer(body)

    async def learn(self, spam: bool, message: bytes) -> bool:
        """True if rspamd learned the message; False if it refused it as already learned (or too
        small for its classifier), which is not an error. RspamdUnavailable otherwise."""
        status, body = await self._post("/learnspam" if spam else "/learnham", message, [])
        if status == 200:
            return True
        if status in (204, 208, 404):  # rspamd's "already learned" / "nothing to learn" answers
            return False
        raise RspamdUnavailable(f"learn answered {status}: {body[:200]!r}")

    async def close(self) -> None:
        await self.http.aclose()
