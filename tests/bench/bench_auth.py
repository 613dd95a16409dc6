"""What mail authentication costs (issue 14): DKIM signing on the way out.

Submission -> remote delivery, the whole stack: smtp_ingest submits over STARTTLS + AUTH (20
connections, 4 KiB) to one recipient domain, sink.test, whose MX (from a DNS server this benchmark
starts) is Postfix's `smtp-sink` on 127.0.0.1 (C: answers 250, stores nothing). Two senders of the same
stack take turns: unsigned@plain.test (its domain has no DKIM key: delivery sends the message as it is)
and signed@keyed.test (an active key set: every message leaves with an RSA-2048 and an Ed25519
signature). Each round sends N messages and times submission start -> the queue reporting every one
of them delivered; three rounds of each, alternated, so the machine's drift hits both alike.
Target: signed >= 90 % of unsigned (the median rounds).

The inbound checks (SPF, DKIM, DMARC on port 25) are measured by `bench_smtp` beside the plain ingest.
No peers: Postfix signs nothing without OpenDKIM, and what is compared is Mailflow with and without.

    python -m tests.bench.bench_auth [-n 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.bench.common import (
    counter,
    delivered,
    metrics_text,
    rate,
    report,
    run_tool,
    smtp_sink,
    wait_delivered,
)
from tests.support import free_port
from tests.support.dns import DnsServer

TARGET_SIGNED_SHARE = 0.90
SENDERS = {"unsigned": ("unsigned@plain.test", "plain-pw"), "signed": ("signed@keyed.test", "keyed-pw")}


def dkim_counts(st: Stack) -> dict[str, float]:
    """delivery's mailflow_delivery_dkim_messages_total by result: the run must sign what it says it does."""
    text = metrics_text(st, "delivery")
    return {r: counter(text, "mailflow_delivery_dkim_messages_total", f'result="{r}"') for r in ("signed", "unsigned", "deferred")}


def users(st: Stack) -> None:
    with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=30) as c:
        for address, password in SENDERS.values():
            c.post("/admin/domains", json={"name": address.split("@")[1]}).raise_for_status()
            c.post("/admin/users", json={"address": address, "password": password}).raise_for_status()
    st.cli("dkim", "keygen", "keyed.test", "--selector", "bench")
    st.cli("dkim", "activate", "keyed.test", "bench")


def one_round(st: Stack, kind: str, n: int) -> float:
    sender, password = SENDERS[kind]
    base, signed = delivered(st), dkim_counts(st).get("signed", 0)
    t0 = time.perf_counter()
    load = run_tool(
        "smtp_ingest", "--port", str(st.ports.submission), "--login", f"{sender}:{password}", "--sender", sender,
        "--rcpt-domain", "sink.test", "--users", "100", "--size", "4096", "-n", str(n), "-c", "20",
    )  # fmt: skip
    if load["errors"]:
        raise RuntimeError(f"{kind}: {load['errors']} submission errors: {load}")
    figure = load["accepted"] / (wait_delivered(st, base + load["accepted"]) - t0)
    now_signed = dkim_counts(st).get("signed", 0) - signed
    if now_signed != (load["accepted"] if kind == "signed" else 0):
        raise RuntimeError(f"{kind}: {now_signed} of {load['accepted']} messages were signed")
    return figure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", "-n", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    sink_port = free_port()
    zone = "sink.test. 300 IN MX 10 mx.sink.test.\nmx.sink.test. 300 IN A 127.0.0.1\n"
    with (
        smtp_sink("127.0.0.1", sink_port) as running,
        DnsServer(zone) as dns,
        tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp,
    ):
        if not running:
            raise SystemExit("bench_auth needs Postfix's smtp-sink and root (it drops privileges to postfix)")
        env = {
            "MAILFLOW_RESOLVER_NAMESERVERS": dns.address,
            "MAILFLOW_DELIVERY_REMOTE_PORT": str(sink_port),
            "MAILFLOW_LOG_LEVEL": "WARNING",
        }
        with Stack(Path(tmp), Ports.free(), env=env) as st:
            users(st)
            for kind in SENDERS:  # warm-up: connections, the key cache, the MX cache
                one_round(st, kind, 300)
            figures: dict[str, list[float]] = {kind: [] for kind in SENDERS}
            for _ in range(a.rounds):
                for kind in SENDERS:
                    figures[kind].append(round(one_round(st, kind, a.messages), 1))
    medians = {kind: statistics.median(v) for kind, v in figures.items()}
    share = medians["signed"] / medians["unsigned"]
    print(f"submission -> remote delivery, 4 KiB, {a.messages} messages a round: {figures}")
    print(f"signed {rate(medians['signed'])} vs unsigned {rate(medians['unsigned'])}: {share:.0%} (target >= {TARGET_SIGNED_SHARE:.0%})")
    report("dkim_signing", unsigned_msgs_per_s=medians["unsigned"], signed_msgs_per_s=medians["signed"],
           share=round(share, 3), rounds=figures, target=TARGET_SIGNED_SHARE)  # fmt: skip


if __name__ == "__main__":
    main()
