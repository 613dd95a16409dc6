"""`mailflow dns records DOMAIN`: the DNS records a domain of ours needs, as zone-file lines to paste.

MX (to MAILFLOW_HOSTNAME), SPF (RFC 7208: the MX hosts, plus delivery's source address when one is
set), the DKIM public keys of every key set the store keeps for the domain (pending ones to publish
before `mailflow dkim activate`, retired ones until they are removed; each TXT value cut into strings
of at most 255 octets, RFC 1035 §3.3.14), DMARC (RFC 7489) and the SRV records by which mail clients
find the servers (RFC 6186, RFC 8314 §5.1 for submissions). MTA-STS and TLS-RPT are left out: Mailflow
serves no MTA-STS policy yet. The A/AAAA records of the host itself are the operator's (a comment says so).
"""

from __future__ import annotations

import ipaddress

import typer

from mailflow.cli.common import Api, err
from mailflow.configfile import lookup
from mailflow.contracts.rest import DkimKeyPublic
from mailflow.services import DELIVERY, LISTENERS

app = typer.Typer(help="The DNS records our domains need.", no_args_is_help=True)

TTL = 3600
# RFC 6186 §3 (and RFC 8314 §5.1): service, listener; IMAP before POP3 (priority 0 against 10)
SRV = (
    ("_submissions._tcp", "smtps", 0),
    ("_submission._tcp", "submission", 0),
    ("_imaps._tcp", "imaps", 0),
    ("_imap._tcp", "imap", 0),
    ("_pop3s._tcp", "pop3s", 10),
    ("_pop3._tcp", "pop3", 10),
)


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


def records(domain: str, hostname: str, keys: list[DkimKeyPublic], dmarc_policy: str, source_address: str = "") -> list[str]:
    """The zone-file lines (comments start with ';')."""
    d, host = domain.rstrip(".").lower() + ".", hostname.rstrip(".").lower() + "."
    out = [
        f"; {domain}: the records Mailflow needs (mailflow dns records). {host} needs its own A/AAAA records.",
        "; MTA-STS and TLS-RPT: not configured, none printed.",
        f"{d}\t{TTL}\tIN\tMX\t10 {host}",
        f"{d}\t{TTL}\tIN\tTXT\t{txt(spf(source_address))}",
    ]
    note = {"pending": "publish, then `mailflow dkim activate`", "active": "signs now", "retired": "no longer signs; keep until removed"}
    for key in keys:
        out.append(f"; DKIM key set {key.selector}: {key.state} ({note[key.state]})")
        for r in key.records:
            out.append(f"{r.selector}._domainkey.{d}\t{TTL}\tIN\tTXT\t{txt(r.txt())}")
    if not keys:
        out.append(f"; no DKIM key: `mailflow dkim keygen {domain}` makes one")
    out.append(f"_dmarc.{d}\t{TTL}\tIN\tTXT\t{txt(f'v=DMARC1; p={dmarc_policy}; adkim=r; aspf=r')}")
    for name, listener, priority in SRV:
        out.append(f"{name}.{d}\t{TTL}\tIN\tSRV\t{priority} 1 {LISTENERS[listener][1].port} {host}")
    return out


@app.command("records")
def dns_records(
    domain: str = typer.Argument(..., help="One of our domains.", show_default=False),
    hostname: str | None = typer.Option(None, help="The mail host's public name (default: MAILFLOW_HOSTNAME)."),
    dmarc: str = typer.Option("quarantine", help="DMARC policy: none, quarantine or reject."),
) -> None:
    """Print DOMAIN's MX, SPF, DKIM, DMARC and SRV records as zone-file lines, ready to paste."""
    if dmarc not in ("none", "quarantine", "reject"):
        err.print("[red]--dmarc[/] must be none, quarantine or reject")
        raise typer.Exit(2)
    host = hostname or lookup("MAILFLOW_HOSTNAME") or "localhost"
    if host == "localhost":
        err.print("[yellow]MAILFLOW_HOSTNAME is not set[/]: the records name localhost (give --hostname)")
    keys = [DkimKeyPublic.model_validate(k) for k in Api.store().get("/admin/dkim", domain=domain)]  # 404: not ours
    source = lookup(DELIVERY.var("source_address")) or ""
    for line in records(domain, host, keys, dmarc, source):
        typer.echo(line)
