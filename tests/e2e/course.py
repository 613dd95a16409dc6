"""The course scenario's world: two Mailflow stacks (daum.test on 127.0.0.2, naver.test on 127.0.0.3),
a real DNS server on loopback serving their MX and A records, and helpers to submit and read mail.

Each stack delivers to the other's SMTP port (remote_port) from its own address (source_address),
asks the test's DNS server (resolver nameservers) and nothing else. The foreign MTA (Postfix) of
`postfix.py` sits on 127.0.0.4, on the same port number as naver's SMTP.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import ssl
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.support.dns import DnsServer

ZONE = """
daum.test.        60 IN MX 10 mx.daum.test.
mx.daum.test.     60 IN A  127.0.0.2
naver.test.       60 IN MX 10 mx.naver.test.
mx.naver.test.    60 IN A  127.0.0.3
postfix.test.     60 IN MX 10 mx.postfix.test.
mx.postfix.test.  60 IN A  127.0.0.4
nullmx.test.      60 IN MX 0 .
"""

USERS = {"daum": ("a@daum.test", "a-pw"), "naver": ("z@naver.test", "z-pw")}


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(to: str, subject: str, sender: str = "a@daum.test") -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@daum.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Hello from the course scenario: {subject}\r\n"
    ).encode()


def submit(st: Stack, user: str, password: str, rcpts: list[str], raw: bytes) -> str:
    """Submission with STARTTLS and AUTH, like a mail client; returns the queue id from the 250."""
    with smtplib.SMTP(st.ports.host, st.ports.submission, timeout=30) as s:
        s.ehlo("laptop.test")
        s.starttls(context=unverified())
        s.ehlo("laptop.test")
        s.login(user, password)
        code, _ = s.mail(user)
        assert code == 250
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = s.data(raw)
        assert code == 250, text
        return re.search(rb"queued as ([0-9A-Za-z]+)", text).group(1).decode()


def queue_api(st: Stack) -> httpx.Client:
    return httpx.Client(base_url=st.http_url("queue"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=10)


def queue_show(st: Stack, queue_id: str) -> dict | None:
    with queue_api(st) as c:
        r = c.get(f"/queue/{queue_id}")
        return r.json() if r.status_code == 200 else None


def states(st: Stack, queue_id: str) -> dict[str, str]:
    m = queue_show(st, queue_id)
    return {r["address"]: r["state"] for r in m["recipients"]} if m else {}


def pop3(st: Stack, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(st.ports.host, st.ports.pop3, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def imap(st: Stack, user: str, password: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30)
    m.login(user, password)
    return m


def imap_find(st: Stack, user: str, password: str, needle: str, mailbox: str = "INBOX") -> list[bytes]:
    """Bodies of `mailbox`'s messages that contain `needle` (read with BODY.PEEK[], nothing marked seen)."""
    with imap(st, user, password) as m:
        m.select(mailbox)
        _, data = m.uid("SEARCH", None, "ALL")
        out = []
        for uid in data[0].split():
            _, got = m.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            body = got[0][1]
            if needle.encode() in body:
                out.append(body)
        return out


@dataclass
class Course:
    dns: DnsServer
    daum: Stack
    naver: Stack


def start_course(tmp_path_factory, **daum_env) -> tuple[ExitStack, Course]:
    es = ExitStack()
    dns = es.enter_context(DnsServer(ZONE))
    ports = {"daum": Ports.free(host="127.0.0.2"), "naver": Ports.free(host="127.0.0.3")}
    stacks = {}
    for name, other in (("daum", "naver"), ("naver", "daum")):
        env = {
            "MAILFLOW_RESOLVER_NAMESERVERS": dns.address,
            "MAILFLOW_DELIVERY_REMOTE_PORT": str(ports[other].smtp),
            "MAILFLOW_DELIVERY_SOURCE_ADDRESS": ports[name].host,
            "MAILFLOW_DELIVERY_CONNECT_TIMEOUT": "5",
            "MAILFLOW_DELIVERY_COMMAND_TIMEOUT": "30",
            "MAILFLOW_QUEUE_SCAN_INTERVAL_S": "0.2",
        }
        if name == "daum":
            env.update(daum_env)
        st = Stack(tmp_path_factory.mktemp(name), ports[name], env=env, hostname=f"mx.{name}.test")
        es.callback(st.stop)
        st.start()
        user, pw = USERS[name]
        with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
            c.post("/admin/domains", json={"name": f"{name}.test"}).raise_for_status()  # = mailflow domain add
            c.post("/admin/users", json={"address": user, "password": pw}).raise_for_status()  # = mailflow user add
        stacks[name] = st
    return es, Course(dns, stacks["daum"], stacks["naver"])
