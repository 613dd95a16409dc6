"""Mail client autoconfiguration, served by smtp-ingress's HTTPS listener (MAILFLOW_SMTP_HTTPS_PORT, beside
the MTA-STS policy): the user types an address and a password, the client finds the servers.

- Thunderbird (and K-9/Thunderbird for Android, Evolution, KMail...): `GET /mail/config-v1.1.xml` on
  `autoconfig.<domain>` and `GET /.well-known/autoconfig/mail/config-v1.1.xml` on `<domain>`, with
  `?emailaddress=<address>`: a `clientConfig` version 1.1 document (the format Mozilla's ISPDB uses)
  for the address's domain, or, without the parameter, for the host's (`autoconfig.` taken off).
- Outlook's Autodiscover, the POX protocol: `POST /autodiscover/autodiscover.xml` (and the capitalised
  `/Autodiscover/Autodiscover.xml`) on `autodiscover.<domain>`, or wherever a `_autodiscover._tcp` SRV
  record points, with a request naming `EMailAddress` and the Outlook response schema (2006a): an
  `Account` of type email with the IMAP, POP3 and SMTP `Protocol`s, LoginName the address.

What the answers say comes from settings: the host is MAILFLOW_HOSTNAME, the ports and TLS the
`mailflow.clientconfig` table (the same as the SRV records of `mailflow dns records`): implicit TLS
first, then STARTTLS; logins are the whole address, passwords sent inside TLS (password-cleartext,
SPA off). Only domains the mailbox-store calls ours get one (the same cached question as MTA-STS); the
user's existence is never looked at, so nothing here tells who has an account.

Failures, each a clear status with a short text and nothing of ours in it: not our domain, or no domain
to be found, 404; an address that is not one (over 254 octets, no `@`, a domain that is not a host name)
400; an Autodiscover body over MAX_BODY_BYTES 413 (told by Content-Length or counted while read); a body
that is not well-formed XML, carries a DTD (entity declarations, hence "billion laughs", are refused at
the DOCTYPE, before any is read: expat, never expanding anything), nests deeper than MAX_DEPTH or holds
more than MAX_ELEMENTS elements, or lacks the address: 400; a request for another response schema (the
mobile sync one) an Autodiscover `Error` 600, status 200 as Autodiscover servers answer it; the store not
answering 503 (the client tries its next method). Each answer is counted by client and result
(`mailflow_smtp_autoconfig_requests_total`).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from mailflow.clientconfig import ENDPOINTS, Endpoint
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress.mtasts import IsLocalDomain

log = logging.getLogger(__name__)

MAX_ADDRESS = 254  # octets of a mailbox in a path (RFC 5321 §4.5.3.1.3: 256 with the angle brackets)
MAX_BODY_BYTES = 16 * 1024  # Outlook's request is ~400 octets
MAX_DEPTH = 8  # Autodiscover/Request/EMailAddress is 3 deep
MAX_ELEMENTS = 64
THUNDERBIRD_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
XML = "application/xml; charset=utf-8"
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class BadRequest(ValueError):
    """The client's request cannot be answered: .status and the text it gets."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status

    @property
    def result(self) -> str:
        return {413: "too_large", 503: "unavailable"}.get(self.status, "bad_request")


def host_name(name: str) -> str | None:
    """`name` lower-cased without a final dot if it is a host name of two labels or more (letters,
    digits, hyphens; IDNs as A-labels), else None."""
    name = name.lower().removesuffix(".")
    if not 3 <= len(name) <= 253 or not name.isascii():
        return None
    labels = name.split(".")
    if len(labels) < 2:
        return None
    for label in labels:
        if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-" or not set(label) <= _HOST_CHARS:
            return None
    return name


def address_domain(address: str) -> str:
    """The domain of a mail address, lower case; BadRequest(400) for something that is not one."""
    if len(address.encode()) > MAX_ADDRESS:
        raise BadRequest(400, "address too long")
    local, at, domain = address.rpartition("@")
    if not at or not local or not local.isprintable() or any(c in local for c in ' <>"\\'):
        raise BadRequest(400, "not a mail address")
    name = host_name(domain)
    if name is None:
        raise BadRequest(400, "not a mail address")
    return name


@dataclass(frozen=True)
class ClientConfig:
    """What the answers say: the mail host, and the endpoints in the order clients should try them."""

    hostname: str
    endpoints: tuple[Endpoint, ...] = ENDPOINTS

    def thunderbird(self, domain: str) -> bytes:
        """The clientConfig 1.1 document for `domain`. The username is the placeholder the client fills
        in with the address the user typed (%EMAILADDRESS%), so no client input is echoed."""
        root = ET.Element("clientConfig", version="1.1")
        provider = ET.SubElement(root, "emailProvider", id=domain)
        ET.SubElement(provider, "domain").text = domain
        ET.SubElement(provider, "displayName").text = f"{domain} mail"
        ET.SubElement(provider, "displayShortName").text = domain
        for e in self.endpoints:
            server = ET.SubElement(provider, "outgoingServer" if e.protocol == "smtp" else "incomingServer", type=e.protocol)
            ET.SubElement(server, "hostname").text = self.hostname
            ET.SubElement(server, "port").text = str(e.port)
            ET.SubElement(server, "socketType").text = "SSL" if e.implicit_tls else "STARTTLS"
            ET.SubElement(server, "authentication").text = "password-cleartext"  # PLAIN/LOGIN inside TLS
            ET.SubElement(server, "username").text = "%EMAILADDRESS%"
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def autodiscover(self, address: str) -> bytes:
        """The POX response (Outlook schema 2006a) for `address` (checked by address_domain): one
        Protocol per protocol, its implicit-TLS endpoint (Autodiscover names one server per type)."""
        root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
        account = ET.SubElement(ET.SubElement(root, "Response", xmlns=OUTLOOK_NS), "Account")
        ET.SubElement(account, "AccountType").text = "email"
        ET.SubElement(account, "Action").text = "settings"
        for protocol in ("imap", "pop3", "smtp"):
            e = next(e for e in self.endpoints if e.protocol == protocol and e.implicit_tls)
            p = ET.SubElement(account, "Protocol")
            for tag, text in (
                ("Type", protocol.upper()),
                ("Server", self.hostname),
                ("Port", str(e.port)),
                ("LoginName", address),
                ("DomainRequired", "off"),
                ("SPA", "off"),
                ("SSL", "on"),
                ("AuthRequired", "on"),
            ):
                ET.SubElement(p, tag).text = text
            if protocol == "smtp":
                ET.SubElement(p, "UsePOPAuth").text = "off"  # its own login (the same address and password)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def autodiscover_error(code: int, message: str) -> bytes:
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    error = ET.SubElement(ET.SubElement(root, "Response"), "Error")
    ET.SubElement(error, "ErrorCode").text = str(code)
    ET.SubElement(error, "Message").text = message
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def parse_request(body: bytes) -> tuple[str, str]:
    """(EMailAddress, AcceptableResponseSchema) of an Autodiscover POX request; BadRequest(400) for
    anything else. expat, with a DOCTYPE refused where it starts: no entity is ever declared, so none
    can be expanded, and nothing external is fetched."""
    wanted = {(REQUEST_NS, "EMailAddress"): [], (REQUEST_NS, "AcceptableResponseSchema"): []}
    stack: list[tuple[str, str]] = []
    elements = 0

    def refuse(*_args) -> None:
        raise BadRequest(400, "a DTD is not accepted")

    def start(name: str, _attrs: dict) -> None:
        nonlocal elements
        ns, _, local = name.rpartition(" ")
        stack.append((ns, local))
        elements += 1
        if len(stack) > MAX_DEPTH or elements > MAX_ELEMENTS:
            raise BadRequest(400, "request too deeply nested or too long")
        if len(stack) == 1 and stack[0] != (REQUEST_NS, "Autodiscover"):
            raise BadRequest(400, "not an Autodiscover request")

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if len(stack) == 3 and stack[1] == (REQUEST_NS, "Request") and stack[2] in wanted:
            wanted[stack[2]].append(data)

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise BadRequest(400, f"malformed XML: {expat.ErrorString(exc.code)}") from None
    except BadRequest:  # from the handlers above (a ValueError too)
        raise
    except (LookupError, ValueError):  # an encoding Python does not know, or a multi-byte one expat cannot take
        raise BadRequest(400, "the XML declares an encoding that is not supported") from None
    address = "".join(wanted[(REQUEST_NS, "EMailAddress")]).strip()
    schema = "".join(wanted[(REQUEST_NS, "AcceptableResponseSchema")]).strip()
    if not address:
        raise BadRequest(400, "no EMailAddress in the request")
    return address, schema


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (BadRequest 413) past `limit` octets: by its Content-Length before
    reading, or as soon as the chunks read pass it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, "request body too large")
    return bytes(body)


def router(config: ClientConfig, is_local: IsLocalDomain) -> APIRouter:
    routes = APIRouter()

    async def ours(domain: str) -> bool:
        try:
            return await is_local(domain)
        except Exception as exc:  # the store does not answer: the client goes on to its next method
            log.warning("autoconfiguration not served: domain lookup failed: %s", exc, extra={"domain": domain})
            raise BadRequest(503, "try again later") from None

    async def thunderbird(request: Request) -> Response:
        try:
            address = request.query_params.get("emailaddress")
            if address is not None:
                domain = address_domain(address)
            else:
                host = request.headers.get("host", "").partition(":")[0].lower()
                domain = host_name(host.removeprefix("autoconfig.")) or ""
            if not domain or not await ours(domain):
                metrics.AUTOCONFIG.labels("thunderbird", "not_ours").inc()
                return PlainTextResponse("no configuration for this domain\n", status_code=404)
        except BadRequest as exc:
            metrics.AUTOCONFIG.labels("thunderbird", exc.result).inc()
            return PlainTextResponse(f"{exc}\n", status_code=exc.status)
        metrics.AUTOCONFIG.labels("thunderbird", "ok").inc()
        return Response(config.thunderbird(domain), media_type=XML)

    async def autodiscover(request: Request) -> Response:
        try:
            address, schema = parse_request(await read_body(request))
            if schema != OUTLOOK_NS:  # e.g. ActiveSync's mobilesync schema: a provider we are not
                metrics.AUTOCONFIG.labels("outlook", "other_schema").inc()
                return Response(autodiscover_error(600, "Invalid Request"), media_type=XML)
            if not await ours(address_domain(address)):
                metrics.AUTOCONFIG.labels("outlook", "not_ours").inc()
                return PlainTextResponse("no configuration for this domain\n", status_code=404)
        except BadRequest as exc:
            metrics.AUTOCONFIG.labels("outlook", exc.result).inc()
            return PlainTextResponse(f"{exc}\n", status_code=exc.status)
        metrics.AUTOCONFIG.labels("outlook", "ok").inc()
        return Response(config.autodiscover(address), media_type=XML)

    for path in THUNDERBIRD_PATHS:
        routes.add_api_route(path, thunderbird, methods=["GET"])
    for path in AUTODISCOVER_PATHS:
        routes.add_api_route(path, autodiscover, methods=["POST"])
    return routes
