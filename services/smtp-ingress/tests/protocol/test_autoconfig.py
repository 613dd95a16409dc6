"""Mail client autoconfiguration (autoconfig.py) on smtp-ingress's HTTPS listener, over real TLS with a
certificate from a CA the test makes; the store is the real one (behind a switch). Thunderbird's
clientConfig and Outlook's Autodiscover answers are read back as those clients read them: the elements
and values their formats define (Mozilla's clientConfig 1.1, the Autodiscover POX schemas), hosts and
ports the ones the SRV records of `mailflow dns records` publish. Hostile bodies get a clear 4xx."""

from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET

import pytest

from mailflow import tls
from mailflow.cli.dns import Wanted, entries
from mailflow_smtp_ingress.app import https_server
from mailflow_smtp_ingress.autoconfig import MAX_BODY_BYTES, OUTLOOK_NS, REQUEST_NS, RESPONSE_NS
from mailflow_smtp_ingress.settings import Settings
from tests.support import free_port
from tests.support.doubles import SwitchableDirectory
from tests.support.pki import TestCa

HOST = "mx.example.test"
NAMES = (HOST, "autoconfig.example.test", "autodiscover.example.test", "example.test", "autoconfig.theirs.test")


def outlook_request(address: str, schema: str = OUTLOOK_NS) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\r\n<Autodiscover xmlns="{REQUEST_NS}">\r\n  <Request>\r\n'
        f"    <EMailAddress>{address}</EMailAddress>\r\n    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\r\n"
        "  </Request>\r\n</Autodiscover>\r\n"
    ).encode()


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(b' <!ENTITY lol%d "%s">\n' % (i, b"".join(b"&lol%s;" % (str(i - 1).encode() if i > 1 else b"") for _ in range(10))) for i in range(1, 10))
    + f'] >\n<Autodiscover xmlns="{REQUEST_NS}"><Request><EMailAddress>&lol9;@example.test</EMailAddress></Request></Autodiscover>'.encode()
)
EXTERNAL_ENTITY = (
    f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><Autodiscover xmlns="{REQUEST_NS}">'
    "<Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>"
).encode()


@pytest.fixture
async def web(tmp_path, store):
    """(call, directory): call(method, host, path, body=b"", headers=None) -> (status, headers, body)."""
    ca = TestCa(tmp_path)
    cert, key = ca.issue(*NAMES)
    settings = Settings(
        service_token="t", hostname=HOST, tls_cert=str(cert), tls_key=str(key), listen=f"127.0.0.1:{free_port()}", https_port=free_port(), nats_url="nats://127.0.0.1:1"
    )
    directory = SwitchableDirectory(store)
    server = await https_server(settings, directory, tls.Certificates(str(cert), str(key)))
    client = ssl.create_default_context(cafile=str(ca.cert))

    async def call(method: str, host: str, path: str, body: bytes = b"", headers: dict | None = None, chunks: list[bytes] | None = None) -> tuple[int, dict[str, str], bytes]:
        r, w = await asyncio.open_connection("127.0.0.1", server.port, ssl=client, server_hostname=host)
        head = {"Host": host, "Connection": "close", **(headers or {})}
        if chunks is not None:
            head["Transfer-Encoding"] = "chunked"
        elif method == "POST" and "Content-Length" not in head:
            head["Content-Length"] = str(len(body))
        w.write(f"{method} {path} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n")
        try:
            if chunks is not None:
                for chunk in chunks:
                    w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await w.drain()
                w.write(b"0\r\n\r\n")
            else:
                w.write(body)
            await w.drain()
        except (ConnectionResetError, BrokenPipeError):  # the server answered and closed before the rest
            pass
        data = await asyncio.wait_for(r.read(), 10)
        w.close()
        raw_head, _, payload = data.partition(b"\r\n\r\n")
        status, *lines = raw_head.decode().split("\r\n")
        return int(status.split()[1]), {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}, payload

    yield call, directory
    await server.stop()


# --- Thunderbird ------------------------------------------------------------------------------------------


def srv_records() -> dict[str, tuple[int, str]]:
    """{service label: (port, host)} of the SRV records `mailflow dns records` prints for example.test."""
    out = {}
    for e in entries("example.test", HOST, [], "none"):
        if isinstance(e, Wanted) and e.type == "SRV":
            _, _, port, host = e.value.split()
            out[e.name.split(".")[0]] = (int(port), host.rstrip("."))
    return out


def read_clientconfig(body: bytes, domain: str) -> list[tuple[str, str, int, str]]:
    """(element, type, port, socketType) of each server, checked as Thunderbird reads the file."""
    root = ET.fromstring(body)
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    (provider,) = root.findall("emailProvider")
    assert provider.get("id") == domain and [d.text for d in provider.findall("domain")] == [domain]
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    servers = []
    for server in provider:
        if server.tag not in ("incomingServer", "outgoingServer"):
            continue
        assert [c.tag for c in server] == ["hostname", "port", "socketType", "authentication", "username"]
        assert server.findtext("hostname") == HOST
        assert server.findtext("socketType") in ("SSL", "STARTTLS")  # never "plain"
        assert server.findtext("authentication") == "password-cleartext"  # PLAIN/LOGIN, inside TLS
        assert server.findtext("username") == "%EMAILADDRESS%"
        servers.append((server.tag, server.get("type"), int(server.findtext("port")), server.findtext("socketType")))
    return servers


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"])
async def test_thunderbird_gets_the_servers_of_a_domain_of_ours(web, path):
    call, _ = web
    status, headers, body = await call("GET", "autoconfig.example.test", f"{path}?emailaddress=alice%40example.test")
    assert status == 200 and headers["content-type"].startswith("application/xml")
    assert read_clientconfig(body, "example.test") == [
        ("outgoingServer", "smtp", 465, "SSL"),
        ("outgoingServer", "smtp", 587, "STARTTLS"),
        ("incomingServer", "imap", 993, "SSL"),
        ("incomingServer", "imap", 143, "STARTTLS"),
        ("incomingServer", "pop3", 995, "SSL"),
        ("incomingServer", "pop3", 110, "STARTTLS"),
    ]
    srv = srv_records()  # the same hosts and ports as the RFC 6186 records
    assert srv == {"_submissions": (465, HOST), "_submission": (587, HOST), "_imaps": (993, HOST), "_imap": (143, HOST), "_pop3s": (995, HOST), "_pop3": (110, HOST)}


async def test_the_domain_asked_with_emailaddress_is_answered_whatever_the_host(web):
    """Thunderbird also asks autoconfig.<the MX's domain> with the user's address: the address decides."""
    call, _ = web
    status, _, body = await call("GET", "autoconfig.theirs.test", "/mail/config-v1.1.xml?emailaddress=bob@other.example.test")
    assert status == 200 and ET.fromstring(body).find("emailProvider").get("id") == "other.example.test"


async def test_without_emailaddress_the_host_names_the_domain(web):
    call, _ = web
    status, _, body = await call("GET", "autoconfig.example.test", "/mail/config-v1.1.xml")
    assert status == 200 and read_clientconfig(body, "example.test")
    status, _, body = await call("GET", "example.test", "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert status == 200 and read_clientconfig(body, "example.test")
    status, _, _ = await call("GET", "autoconfig.theirs.test", "/mail/config-v1.1.xml")
    assert status == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("emailaddress=someone@theirs.test", 404),  # not our domain
        ("emailaddress=nobody-at-all", 400),
        ("emailaddress=a@-bad-.test", 400),
        ("emailaddress=a@localhost", 400),
        ("emailaddress=" + "a" * 250 + "@example.test", 400),
        ("emailaddress=%3Cscript%3E@example.test", 400),
    ],
)
async def test_unknown_domains_and_non_addresses(web, query, status):
    call, _ = web
    got, _, body = await call("GET", "autoconfig.example.test", f"/mail/config-v1.1.xml?{query}")
    assert got == status and b"<" not in body


async def test_the_store_away_is_a_503(web):
    call, directory = web
    directory.down = True
    status, _, _ = await call("GET", "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=alice@example.test")
    assert status == 503


# --- Outlook's Autodiscover -------------------------------------------------------------------------------


def read_autodiscover(body: bytes, address: str) -> dict[str, dict[str, str]]:
    """{Type: {element: text}} of each Protocol, checked as Outlook reads the POX response (2006a)."""
    root = ET.fromstring(body)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    (response,) = root
    assert response.tag == f"{{{OUTLOOK_NS}}}Response"
    (account,) = response
    ns = f"{{{OUTLOOK_NS}}}"
    assert account.tag == f"{ns}Account"
    assert account.findtext(f"{ns}AccountType") == "email" and account.findtext(f"{ns}Action") == "settings"
    protocols = {}
    for p in account.findall(f"{ns}Protocol"):
        fields = {c.tag.removeprefix(ns): c.text for c in p}
        assert fields["Server"] == HOST and fields["LoginName"] == address
        assert (fields["SSL"], fields["SPA"], fields["AuthRequired"], fields["DomainRequired"]) == ("on", "off", "on", "off")
        protocols[fields.pop("Type")] = fields
    return protocols


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"])
async def test_outlook_gets_imap_pop3_and_smtp_over_tls(web, path):
    call, _ = web
    status, headers, body = await call("POST", "autodiscover.example.test", path, outlook_request("alice@example.test"), {"Content-Type": "text/xml"})
    assert status == 200 and headers["content-type"].startswith("application/xml")
    protocols = read_autodiscover(body, "alice@example.test")
    assert {t: int(p["Port"]) for t, p in protocols.items()} == {"IMAP": 993, "POP3": 995, "SMTP": 465}
    assert protocols["SMTP"]["UsePOPAuth"] == "off"


async def test_autodiscover_for_a_domain_not_ours_is_a_404(web):
    call, _ = web
    status, _, _ = await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", outlook_request("eve@theirs.test"))
    assert status == 404


async def test_another_response_schema_gets_an_autodiscover_error(web):
    call, _ = web
    mobile = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
    status, _, body = await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", outlook_request("alice@example.test", mobile))
    assert status == 200
    root = ET.fromstring(body)
    assert root.findtext(f"{{{RESPONSE_NS}}}Response/{{{RESPONSE_NS}}}Error/{{{RESPONSE_NS}}}ErrorCode") == "600"


async def test_autodiscover_answers_post_only(web):
    call, _ = web
    status, _, _ = await call("GET", "autodiscover.example.test", "/autodiscover/autodiscover.xml")
    assert status == 405


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (BILLION_LAUGHS, b"a DTD is not accepted"),
        (EXTERNAL_ENTITY, b"a DTD is not accepted"),
        (b"<Autodiscover", b"malformed XML"),
        (b"not xml at all", b"malformed XML"),
        (f'<Autodiscover xmlns="{REQUEST_NS}">'.encode() + b"<a>" * 20 + b"</a>" * 20 + b"</Autodiscover>", b"too deeply nested"),
        (f'<Autodiscover xmlns="{REQUEST_NS}"><Request>'.encode() + b"<x/>" * 100 + b"</Request></Autodiscover>", b"too long"),
        (b'<Autodiscover xmlns="urn:other"><Request><EMailAddress>alice@example.test</EMailAddress></Request></Autodiscover>', b"not an Autodiscover request"),
        (f'<Autodiscover xmlns="{REQUEST_NS}"><Request/></Autodiscover>'.encode(), b"no EMailAddress"),
        (outlook_request("no address"), b"not a mail address"),
        # found by the fuzzer: an encoding Python does not know raised LookupError (a 500)
        (outlook_request("a@example.test").replace(b"utf-8", b"utf-4"), b"encoding that is not supported"),
        (outlook_request("a@example.test").replace(b"utf-8", b"cp932"), b"encoding that is not supported"),
    ],
    ids=[
        "billion-laughs", "external-entity", "truncated", "not-xml", "deep", "many", "other-namespace", "no-address",
        "bad-address", "unknown-encoding", "multibyte-encoding",
    ],  # fmt: skip
)
async def test_hostile_or_broken_bodies_get_a_clear_400(web, body, text):
    call, _ = web
    status, _, answer = await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", body)
    assert status == 400 and text in answer


async def test_a_huge_body_is_refused_before_it_is_read(web):
    call, _ = web
    # told by Content-Length: refused without reading what follows (only a little is sent)
    status, _, answer = await call(
        "POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", b"<" * 1024, {"Content-Length": str(1 << 30)}
    )
    assert status == 413 and b"too large" in answer
    # chunked, no length said: counted while read, refused once past the limit
    chunks = [b" " * 4096] * (MAX_BODY_BYTES // 4096 + 2)
    status, _, answer = await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", chunks=chunks)
    assert status == 413 and b"too large" in answer
    # just under the limit is read and parsed
    padded = outlook_request("alice@example.test").replace(b"<Request>", b"<Request>" + b" " * (MAX_BODY_BYTES - 1000))
    status, _, body = await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", padded)
    assert status == 200 and read_autodiscover(body, "alice@example.test")


async def test_each_answer_is_counted_by_client_and_result(web):
    from prometheus_client import REGISTRY

    def count(client: str, result: str) -> float:
        return REGISTRY.get_sample_value("mailflow_smtp_autoconfig_requests_total", {"client": client, "result": result}) or 0.0

    call, _ = web
    before = {k: count(*k) for k in (("thunderbird", "ok"), ("thunderbird", "not_ours"), ("outlook", "bad_request"), ("outlook", "too_large"))}
    await call("GET", "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=alice@example.test")
    await call("GET", "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=eve@theirs.test")
    await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", BILLION_LAUGHS)
    await call("POST", "autodiscover.example.test", "/autodiscover/autodiscover.xml", b"x", {"Content-Length": str(1 << 20)})
    assert {k: count(*k) - v for k, v in before.items()} == dict.fromkeys(before, 1.0)
