"""`mailflow dns records DOMAIN`: the DNS records a domain of ours needs, as zone-file lines to paste;
with `--check`, what DNS has of each of them.

MX (to MAILFLOW_HOSTNAME), SPF (RFC 7208: the MX hosts, plus delivery's source address when one is
set), the DKIM public keys of every key set the store keeps for the domain (pending ones to publish
before `mailflow dkim activate`, retired ones until they are removed; each TXT value cut into strings
of at most 255 octets, RFC 1035 §3.3.14), DMARC (RFC 7489) and the SRV records by which mail clients
find the servers (RFC 6186, RFC 8314 §5.1 for submissions), when smtp-ingress serves our MTA-STS
policy (MAILFLOW_SMTP_HTTPS_PORT set), its `_mta-sts` TXT record (RFC 8461 §3.1) with the id of the
policy the MAILFLOW_SMTP_MTA_STS_* settings make (`mailflow.mtasts.published`: it changes when the policy
does) and a comment on the mta-sts.<domain> host name, and for mail clients' autoconfiguration served
on the same HTTPS listener the `_autodiscover._tcp` SRV record (Outlook) with a comment on the
autoconfig.<domain> and autodiscover.<domain> names (Thunderbird, Outlook), and the DANE TLSA record of the mail host
(RFC 7672: `_25._tcp.<host> TLSA 3 1 1 <SHA-256 of the certificate's public key>`, from MAILFLOW_TLS_CERT;
a comment instead when that file is not set or cannot be read), and with --tls-reports-to the
`_smtp._tls` TXT record asking other servers for daily TLS reports (RFC 8460 §3). The A/AAAA records
of the host itself, and of mta-sts.<domain>, are the operator's (comments say so).

`--check` asks the resolver service (`GET /query/{type}/{name}`, service token) about each record and
prints one line each: ok, missing, wrong (with what DNS has) or error (DNS could not answer: try again);
and whether the mail host (and mta-sts.<domain>, with MTA-STS) has an address. The MTA-STS TXT record
is ok when DNS has exactly one v=STSv1 record with our id. An SRV record is ok when DNS has one with the
same port and target (priority and weight are the operator's to choose); a TLSA record when DNS has it
among others (a key rollover publishes the next key's record beside the current one). It exits 1 unless
every checked record is ok, 2 if the resolver does not answer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import typer

from mailflow import mtasts, tlsa
from mailflow.authn.spf import is_spf
from mailflow.cli.common import Api, err
from mailflow.clientconfig import ENDPOINTS
from mailflow.configfile import lookup
from mailflow.contracts.messages import DnsAnswer
from mailflow.contracts.rest import DkimKeyPublic
from mailflow.services import DELIVERY, SMTP_INGRESS

app = typer.Typer(help="The DNS records our domains need.", no_args_is_help=True)

TTL = 3600
SHOWN = 100  # characters of what DNS has, in a "wrong" line


@dataclass(frozen=True)
class Wanted:
    """One record the domain needs: `value` is the MX/SRV data, or a TXT record's text (unquoted)."""

    name: str  # with the final dot
    type: str  # MX, TXT, SRV, TLSA
    value: str

    def line(self) -> str:
        data = txt(self.value) if self.type == "TXT" else self.value
        return f"{self.name}\t{TTL}\tIN\t{self.type}\t{data}"


def txt(value: str) -> str:
    """A TXT record's data in zone-file form: quoted strings of at most 255 octets each."""
    data = value.encode()
    return " ".join('"' + data[i : i + 255].decode() + '"' for i in range(0, len(data), 255)) or '""'


def spf(source_address: str) -> str:
    terms = ["v=spf1", "mx"]
    if source_address:
        ip = ipaddress.ip_address(source_address)
        terms.append(f"ip{ip.version}:{ip}")
    return " ".join([*terms, "-all"])


def entries(
    domain: str, hostname: str, keys: list[DkimKeyPublic], dmarc_policy: str, source_address: str = "", sts: mtasts.Policy | None = None, https_port: int = 443
) -> list[str | Wanted]:
    """The records, with comment lines (';') where they help. `sts`: the MTA-STS policy we serve (then
    also the autoconfiguration, on the same HTTPS listener at `https_port`)."""
    d, host = domain.rstrip(".").lower() + ".", hostname.rstrip(".").lower() + "."
    out: list[str | Wanted] = [
        f"; {domain}: the records Mailflow needs (mailflow dns records). {host} needs its own A/AAAA records.",
        Wanted(d, "MX", f"10 {host}"),
        Wanted(d, "TXT", spf(source_address)),
    ]
    note = {"pending": "publish, then `mailflow dkim activate`", "active": "signs now", "retired": "no longer signs; keep until removed"}
    for key in keys:
        out.append(f"; DKIM key set {key.selector}: {key.state} ({note[key.state]})")
        out += [Wanted(f"{r.selector}._domainkey.{d}", "TXT", r.txt()) for r in key.records]
    if not keys:
        out.append(f"; no DKIM key: `mailflow dkim keygen {domain}` makes one")
    out.append(Wanted(f"_dmarc.{d}", "TXT", f"v=DMARC1; p={dmarc_policy}; adkim=r; aspf=r"))
    for e in ENDPOINTS:  # RFC 6186 §3 (and RFC 8314 §5.1); IMAP before POP3 (priority 0 against 10)
        out.append(Wanted(f"{e.srv}.{d}", "SRV", f"{e.priority} 1 {e.port} {host}"))
    if sts is None:
        out.append(f"; MTA-STS and client autoconfiguration: not served ({SMTP_INGRESS.var('https_port')} is 0), no record printed.")
    else:
        out.append(
            f"; MTA-STS (mode {sts.mode}, mx {' '.join(sts.mx) or '-'}): https://mta-sts.{d.rstrip('.')}/.well-known/mta-sts.txt is served by "
            f"smtp-ingress; mta-sts.{d} needs an A/AAAA record (or a CNAME) to it, and its certificate must name mta-sts.{d.rstrip('.')}"
        )
        out.append(Wanted(f"_mta-sts.{d}", "TXT", f"v=STSv1; id={sts.id()}"))
        name = d.rstrip(".")
        out.append(
            f"; Autoconfiguration: smtp-ingress answers https://autoconfig.{name}/mail/config-v1.1.xml (Thunderbird) and "
            f"https://autodiscover.{name}/autodiscover/autodiscover.xml (Outlook); give autoconfig.{d} and autodiscover.{d} "
            f"A/AAAA records (or CNAMEs) to it and name them in its certificate, or rely on the SRV record below (Outlook only)"
        )
        out.append(Wanted(f"_autodiscover._tcp.{d}", "SRV", f"0 1 {https_port} {host}"))
    return out


def tls_reports(domain: str, to: str) -> list[str | Wanted]:
    """The `_smtp._tls` record asking other mail servers for their daily TLS reports (RFC 8460 §3) at
    `to`, or a comment saying how to have one."""
    d = domain.rstrip(".").lower() + "."
    if not to:
        return ["; TLS-RPT (RFC 8460): give --tls-reports-to ADDRESS for the record asking other servers for daily TLS reports"]
    return [Wanted(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:{to}")]


def tlsa_record(cert_file: str) -> str:
    """DANE-EE, SPKI, SHA-256 (RFC 7672 §3.1.1, "3 1 1"; `mailflow.tlsa`): the record of the first
    certificate in the PEM file (the server's own; a chain follows it). It stays valid across renewals
    that keep the key. OSError or ValueError if the file cannot be read or holds no usable certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return tlsa.dane_ee(cert.public_bytes(serialization.Encoding.DER))


def dane(hostname: str, cert_file: str) -> list[str | Wanted]:
    """The mail host's TLSA record (port 25: what other MTAs connect to), with the comments it needs."""
    host = hostname.rstrip(".").lower() + "."
    if not cert_file:
        return ["; DANE: no TLSA record (MAILFLOW_TLS_CERT is not set)"]
    try:
        value = tlsa_record(cert_file)
    except tlsa.BadCertificate as exc:
        return [f"; DANE: no TLSA record ({cert_file}: {exc})"]
    except (OSError, ValueError) as exc:
        return [f"; DANE: no TLSA record ({cert_file} not read: {type(exc).__name__})"]
    return [
        "; DANE (RFC 7672): publish only in a DNSSEC-signed zone; before changing the key, publish the new key's record beside this one",
        Wanted(f"_25._tcp.{host}", "TLSA", value),
    ]


def records(domain: str, hostname: str, keys: list[DkimKeyPublic], dmarc_policy: str, source_address: str = "", sts: mtasts.Policy | None = None) -> list[str]:
    """The zone-file lines (comments start with ';')."""
    return [e if isinstance(e, str) else e.line() for e in entries(domain, hostname, keys, dmarc_policy, source_address, sts)]


def _flat(text: str) -> str:
    return "".join(text.split())


def verdict(wanted: Wanted, answer: DnsAnswer) -> tuple[str, str]:
    """(ok | missing | wrong | error, what DNS has when wrong) of one record against DNS's answer. MX:
    ok when our host is among the MX hosts. TXT: the records of the same kind (SPF: `is_spf`; DMARC:
    "v=DMARC1"; DKIM and TLSA: all at the name) compared without whitespace; two SPF records are wrong (RFC 7208
    §4.5 makes that a permerror); MTA-STS: exactly one v=STSv1 record, with our id."""
    if answer.status == "temp_fail":
        return "error", answer.error or "DNS did not answer"
    have = answer.records if answer.status == "ok" else []
    if wanted.type == "MX":
        host = wanted.value.split()[1].rstrip(".")
        same = [r for r in have if r.partition(" ")[2] == host]
    elif wanted.type == "SRV":  # priority weight port target: the same port and host (RFC 6186)
        port, host = wanted.value.split()[2:4]
        same = [r for r in have if r.split()[2:4] == [port, host.rstrip(".")]]
    else:
        if is_spf(wanted.value):
            have = [r for r in have if is_spf(r)]
        elif wanted.value.startswith("v=DMARC1"):
            have = [r for r in have if r.startswith("v=DMARC1")]
        elif wanted.value.startswith("v=TLSRPTv1"):
            have = [r for r in have if _flat(r).startswith("v=TLSRPTv1;")]
        elif wanted.value.startswith("v=STSv1"):  # the same id, in the one v=STSv1 record (RFC 8461 §3.1)
            have = [r for r in have if r.startswith("v=STSv1")]
            try:
                same = have if mtasts.parse_txt(have) == mtasts.parse_txt([wanted.value]) else []
            except mtasts.PolicyError:
                same = []
        if not wanted.value.startswith("v=STSv1"):
            same = [r for r in have if _flat(r) == _flat(wanted.value)]
        if (is_spf(wanted.value) or wanted.value.startswith("v=TLSRPTv1")) and len(have) > 1:
            same = []  # two SPF or two TLS-RPT records count as none (RFC 7208 §4.5, RFC 8460 §3)
    if not have:
        return "missing", ""
    if same:
        return "ok", ""
    shown = " | ".join(have)
    return "wrong", shown if len(shown) <= SHOWN else shown[: SHOWN - 3] + "..."


def check(found: list[Wanted], hostname: str, resolver: Api, sts_host: str | None = None) -> int:
    """Ask the resolver about each record, print a line for each; the number not ok. `sts_host`:
    mta-sts.<domain>, which must have an address too."""
    bad = 0

    def ask(rdtype: str, name: str) -> DnsAnswer:
        return DnsAnswer.model_validate(resolver.get(f"/query/{rdtype}/{quote(name.rstrip('.'), safe='')}"))

    for w in found:
        status, detail = verdict(w, ask(w.type, w.name))
        bad += status != "ok"
        typer.echo(f"{status:<9}  {w.name} {w.type}" + (f": DNS has {detail}" if status == "wrong" else f": {detail}" if detail else ""))
    for host, what in ((hostname.rstrip(".").lower() + ".", "the mail host"), *([(sts_host, "the MTA-STS policy's host")] if sts_host else [])):
        answers = [ask(t, host) for t in ("A", "AAAA")]
        if any(a.status == "ok" for a in answers):
            typer.echo(f"ok         {host} A/AAAA: {' '.join(r for a in answers for r in a.records)}")
        else:
            error = next((a.error for a in answers if a.status == "temp_fail"), None)
            bad += 1
            typer.echo(f"error      {host} A/AAAA: {error}" if error else f"missing    {host} A/AAAA ({what} has no address)")
    return bad


def served_policy(hostname: str) -> mtasts.Policy | None:
    """The MTA-STS policy smtp-ingress serves, from the same settings (None: not served)."""
    if (lookup(SMTP_INGRESS.var("https_port")) or "0") == "0":
        return None
    age = lookup(SMTP_INGRESS.var("mta_sts_max_age")) or "604800"
    try:
        return mtasts.published(lookup(SMTP_INGRESS.var("mta_sts_mode")) or "testing", lookup(SMTP_INGRESS.var("mta_sts_mx")) or "", int(age), hostname)
    except (ValueError, mtasts.PolicyError) as exc:
        err.print(f"[red]{SMTP_INGRESS.var('mta_sts_*')}[/]: {exc}")
        raise typer.Exit(2) from None


@app.command("records")
def dns_records(
    domain: str = typer.Argument(..., help="One of our domains.", show_default=False),
    hostname: str | None = typer.Option(None, help="The mail host's public name (default: MAILFLOW_HOSTNAME)."),
    dmarc: str = typer.Option("quarantine", help="DMARC policy: none, quarantine or reject."),
    check_dns: bool = typer.Option(False, "--check", help="Ask DNS (through the resolver) which records are missing or wrong; exit 1 if any is."),
    tls_reports_to: str = typer.Option("", "--tls-reports-to", help="An address for other servers' daily TLS reports (RFC 8460): adds the _smtp._tls record."),
) -> None:
    """Print DOMAIN's MX, SPF, DKIM, DMARC, SRV (and MTA-STS, TLS-RPT) records, and the mail host's TLSA (DANE), as zone-file lines, ready to paste."""
    if dmarc not in ("none", "quarantine", "reject"):
        err.print("[red]--dmarc[/] must be none, quarantine or reject")
        raise typer.Exit(2)
    host = hostname or lookup("MAILFLOW_HOSTNAME") or "localhost"
    if host == "localhost":
        err.print("[yellow]MAILFLOW_HOSTNAME is not set[/]: the records name localhost (give --hostname)")
    to = tls_reports_to.strip()
    local, at, mail_domain = to.rpartition("@")
    if to and (not (at and local and mail_domain) or not (to.isascii() and to.isprintable()) or any(c in to for c in ' ;,"<>\\')):
        err.print("[red]--tls-reports-to[/] must be a plain mail address (local@domain)")
        raise typer.Exit(2)
    keys = [DkimKeyPublic.model_validate(k) for k in Api.store().get("/admin/dkim", domain=domain)]  # 404: not ours
    source = lookup(DELIVERY.var("source_address")) or ""
    sts = served_policy(host)
    port = int(given) if (given := lookup(SMTP_INGRESS.var("https_port")) or "443").isdigit() else 443
    found = entries(domain, host, keys, dmarc, source, sts, port) + tls_reports(domain, to) + dane(host, lookup("MAILFLOW_TLS_CERT") or "")
    if not check_dns:
        for e in found:
            typer.echo(e if isinstance(e, str) else e.line())
        return
    sts_host = f"mta-sts.{domain.rstrip('.').lower()}." if sts else None
    if check([e for e in found if isinstance(e, Wanted)], host, Api.resolver(), sts_host):
        raise typer.Exit(1)
