"""What enforcing MTA-STS and DANE costs (issue 15): remote delivery over TLS, with a policy and without.

Submission -> remote delivery, the whole stack: smtp_ingest submits over STARTTLS + AUTH (20 connections,
4 KiB, as user0@bench.test) to one of three recipient domains, whose MX hosts, from a DNS server this
benchmark starts, are all one receiver on 127.0.0.1: Postfix's smtpd taking mail only over STARTTLS,
with a certificate from a CA the benchmark makes, passing each message to Postfix's `smtp-sink` (C,
stores nothing; tests/bench/tls_sink.py). Delivery opens one session per message in every mode, so
each message costs a full TLS handshake on both sides; what differs is what delivery asks of it:
  none     plain.test: no policy published; opportunistic STARTTLS, the certificate not checked (the
           baseline, "without")
  mta-sts  sts.test: `_mta-sts` TXT and https://mta-sts.sts.test/.well-known/mta-sts.txt (a thread of
           this process, HTTPS with the CA's certificate) say mode enforce, mx mx.sts.test: delivery
           fetches the policy once (in the warm-up), keeps it in its cache and the KV bucket
           DELIVERY_MTA_STS, and then verifies every receiver's certificate against the CA
           (MAILFLOW_DELIVERY_TLS_CA_FILE) and the MX name
  dane     dane.test: the DNS server answers for it with the AD bit and the resolver trusts it
           (MAILFLOW_RESOLVER_DNSSEC_TRUST_AD, on for the whole stack); `_<port>._tcp.mx.dane.test`
           TLSA 3 1 1 of the receiver's key: STARTTLS is mandatory and the certificate must match
Each round sends N messages to one domain and times submission start -> the queue reporting every one
of them delivered; after a warm-up round each, three rounds of each mode, alternated and rotated (none,
mta-sts, dane; then mta-sts, dane, none; ...: in three rounds each mode comes first, second and third
once), so neither the machine's drift nor the stack's growing data favour one. Target: the median rounds of mta-sts and of dane each >= 90 % of none's.

The run measures what it says, or fails: after each round, delivery's metrics must have counted
exactly N successful enforce-mode MTA-STS sessions (mailflow_delivery_mta_sts_results_total) in the
mta-sts rounds and none in the others, exactly N DANE successes (mailflow_delivery_dane_total) in the
dane rounds and none in the others; the receiver refuses mail in clear (530 5.7.0) and must have
logged exactly N TLS handshakes in the round; at the end the policy must have been fetched exactly once
(mailflow_delivery_mta_sts_policy_fetches_total, and the HTTPS server's own count). Printed besides:
msg/s per round, the CPU each process spent per message in each mode (the stack's services, nats-server,
the receiver's Postfix + smtp-sink; all of the measured rounds), and the TLS version and cipher the
receiver saw. The receiver shares the machine's cores (~3-4 ms of CPU a message on the 2-core dev
machine, as much as delivery's): so each mode's Mailflow CPU per message (every process but the
receiver) is also compared, none's against the mode's (`*_cpu_share`): the share a host whose CPU is
the limit would keep with the receiver elsewhere, and steadier than msg/s on a shared machine.
No peers: what is compared is Mailflow with and without a policy. Needs root and Debian's postfix (for
smtpd and smtp-sink; `make bench` installs it).

    make bench ONLY=tls PEERS=0
    python -m tests.bench.bench_tls [-n 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mailflow import tls
from mailflow.cli.dns import tlsa_record
from mailflow.stack import Ports, Stack
from tests.bench.common import (
    bench_users,
    counter,
    delivered,
    load_average,
    metrics_text,
    rate,
    report,
    run_tool,
    stack_cpu,
    tree_cpu,
    wait_delivered,
)
from tests.bench.tls_sink import TlsSink, available
from tests.support import free_port, wait_for
from tests.support.dns import DnsServer
from tests.support.pki import TestCa

TARGET_SHARE = 0.90
MODES = {"none": "plain.test", "mta-sts": "sts.test", "dane": "dane.test"}  # mode -> recipient domain
SENDER, PASSWORD = "user0@bench.test", "pw"
POLICY_ID = "bench1"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n"
STS = "mailflow_delivery_mta_sts_results_total"
STS_FETCHES = "mailflow_delivery_mta_sts_policy_fetches_total"
DANE = "mailflow_delivery_dane_total"


def zone(port: int, tlsa_record: str) -> str:
    lines = []
    for domain in MODES.values():
        lines += [f"{domain}. 3600 IN MX 10 mx.{domain}.", f"mx.{domain}. 3600 IN A 127.0.0.1"]
    lines += ['_mta-sts.sts.test. 3600 IN TXT "v=STSv1; id=' + POLICY_ID + ';"', "mta-sts.sts.test. 3600 IN A 127.0.0.1"]
    lines.append(f"_{port}._tcp.mx.dane.test. 3600 IN TLSA {tlsa_record}")
    return "\n".join(lines) + "\n"


class PolicyServer:
    """https://mta-sts.sts.test:<port>/.well-known/mta-sts.txt on 127.0.0.1, a thread of this process;
    `requests` counts the policies it served."""

    def __init__(self, cert: Path, key: Path):
        self.ctx = tls.server_context(str(cert), str(key))
        self.requests = 0

    def __enter__(self) -> PolicyServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/mta-sts.txt" or self.headers.get("Host") != "mta-sts.sts.test":
                    self.send_error(404)
                    return
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(POLICY)))
                self.end_headers()
                self.wfile.write(POLICY)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.socket = self.ctx.wrap_socket(self.http.socket, server_side=True)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.shutdown()
        self.http.server_close()


@dataclass
class Counts:
    """What delivery and the receiver have counted so far."""

    delivered: int
    sts: float  # MTA-STS session results, every label
    sts_ok: float  # enforce-mode successes
    dane: float  # DANE results, every label
    dane_ok: float
    tls: int  # TLS handshakes the receiver logged

    @classmethod
    def now(cls, st: Stack, sink: TlsSink) -> Counts:
        text = metrics_text(st, "delivery")
        return cls(
            delivered(st),
            counter(text, STS),
            counter(text, STS, 'mode="enforce",result="success"'),
            counter(text, DANE),
            counter(text, DANE, 'result="success"'),
            sum(sink.tls_sessions().values()),
        )


RECEIVER = "receiver (Postfix + smtp-sink)"


def cpu(st: Stack, sink: TlsSink) -> dict[str, float]:
    return {**stack_cpu(st), RECEIVER: sum(tree_cpu(p) for p in sink.cpu_pids())}


def one_round(st: Stack, sink: TlsSink, mode: str, n: int) -> tuple[float, int, dict[str, float]]:
    """(msg/s, messages, CPU seconds each process spent) of N messages to `mode`'s domain."""
    before, cpu_before = Counts.now(st, sink), cpu(st, sink)
    t0 = time.perf_counter()
    load = run_tool(
        "smtp_ingest", "--port", str(st.ports.submission), "--login", f"{SENDER}:{PASSWORD}", "--sender", SENDER,
        "--rcpt-domain", MODES[mode], "--users", "100", "--size", "4096", "-n", str(n), "-c", "20",
    )  # fmt: skip
    if load["errors"]:
        raise RuntimeError(f"{mode}: {load['errors']} submission errors: {load}")
    got = load["accepted"]
    figure = got / (wait_delivered(st, before.delivered + got) - t0)
    cpu_after = cpu(st, sink)
    # postlogd writes the receiver's log a little after the sessions end
    wait_for(lambda: Counts.now(st, sink).tls >= before.tls + got, timeout=10, what=f"{got} TLS handshakes in the receiver's log")
    after = Counts.now(st, sink)
    seen = (after.sts - before.sts, after.sts_ok - before.sts_ok, after.dane - before.dane, after.dane_ok - before.dane_ok)
    want = {"none": (0, 0, 0, 0), "mta-sts": (got, got, 0, 0), "dane": (0, 0, got, got)}[mode]
    if seen != want or after.tls - before.tls != got:
        raise RuntimeError(
            f"{mode}: {got} messages, but MTA-STS results / enforce successes / DANE results / DANE successes "
            f"{seen} (expected {want}), {after.tls - before.tls} TLS handshakes at the receiver"
        )
    return figure, got, {p: cpu_after.get(p, 0.0) - v for p, v in cpu_before.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", "-n", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    if not available():
        raise SystemExit("bench_tls needs root and Debian's postfix (smtpd and smtp-sink)")
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        ca = TestCa(Path(tmp) / "ca")
        cert, key = ca.issue(*(f"mx.{d}" for d in MODES.values()))
        port = free_port()
        with (
            TlsSink("127.0.0.1", port, free_port(), list(MODES.values()), cert, key) as sink,
            PolicyServer(*ca.issue("mta-sts.sts.test")) as web,
            DnsServer(zone(port, tlsa_record(str(cert))), negative_ttl=3600) as dns,
        ):
            dns.signed = {"dane.test"}
            env = {
                "MAILFLOW_RESOLVER_NAMESERVERS": dns.address,
                "MAILFLOW_RESOLVER_DNSSEC_TRUST_AD": "true",
                "MAILFLOW_DELIVERY_REMOTE_PORT": str(port),
                "MAILFLOW_DELIVERY_MTA_STS_PORT": str(web.port),
                "MAILFLOW_DELIVERY_TLS_CA_FILE": str(ca.cert),
                "MAILFLOW_LOG_LEVEL": "WARNING",
            }
            with Stack(Path(tmp) / "stack", Ports.free(), env=env) as st:
                bench_users(st, 1)
                for mode in MODES:  # warm-up: the policy fetched, the resolver's and delivery's caches, connections
                    one_round(st, sink, mode, 300)
                load_before = load_average()
                figures: dict[str, list[float]] = {mode: [] for mode in MODES}
                sent: collections.Counter[str] = collections.Counter()
                used: dict[str, collections.Counter[str]] = {mode: collections.Counter() for mode in MODES}
                for r in range(a.rounds):
                    order = list(MODES)[r % len(MODES) :] + list(MODES)[: r % len(MODES)]
                    for mode in order:
                        figure, got, spent = one_round(st, sink, mode, a.messages)
                        figures[mode].append(round(figure, 1))
                        sent[mode] += got
                        used[mode].update(spent)
                load_after = load_average()
                fetches = counter(metrics_text(st, "delivery"), STS_FETCHES)
                fetched_ok = counter(metrics_text(st, "delivery"), STS_FETCHES, 'result="ok"')
            ciphers = dict(sink.tls_sessions())
        if (fetches, fetched_ok, web.requests) != (1, 1, 1):
            raise RuntimeError(f"the MTA-STS policy was fetched {fetches} times ({fetched_ok} ok), served {web.requests} times: not once")
    medians = {mode: statistics.median(v) for mode, v in figures.items()}
    shares = {mode: medians[mode] / medians["none"] for mode in ("mta-sts", "dane")}
    cpu_us = {mode: {proc: round(s * 1e6 / sent[mode]) for proc, s in used[mode].items()} for mode in MODES}
    # Mailflow's own CPU per message (the receiver left out): the share a host whose CPU is the limit
    # would keep if the receiver ran elsewhere; steadier than msg/s on a shared machine
    ours = {mode: sum(us for proc, us in cpu_us[mode].items() if proc != RECEIVER) for mode in MODES}
    cpu_shares = {mode: ours["none"] / max(1, ours[mode]) for mode in shares}
    print(f"submission -> remote delivery over STARTTLS, 4 KiB, {a.messages} messages a round, msg/s: {figures}")
    for mode, share in shares.items():
        print(f"{mode} {rate(medians[mode])} vs none {rate(medians['none'])}: {share:.0%} (target >= {TARGET_SHARE:.0%}); "
              f"Mailflow's CPU per message {ours[mode]} vs {ours['none']} µs: {cpu_shares[mode]:.0%}")  # fmt: skip
    print(f"load average {load_before} -> {load_after}; the policy fetched once, in the warm-up; the receiver's TLS sessions: " + ", ".join(f"{k} ({v})" for k, v in ciphers.items()))
    print(f"\nCPU microseconds per message, measured rounds\n{'process':34}" + "".join(f"{m:>10}" for m in MODES))
    for proc in sorted(cpu_us["none"], key=lambda q: -cpu_us["none"][q]):
        print(f"{proc:34}" + "".join(f"{cpu_us[m].get(proc, 0):>10}" for m in MODES))
    print(f"{'Mailflow (all but the receiver)':34}" + "".join(f"{ours[m]:>10}" for m in MODES))
    print(f"{'all':34}" + "".join(f"{sum(cpu_us[m].values()):>10}" for m in MODES))
    report("tls_policies", none_msgs_per_s=medians["none"], mta_sts_msgs_per_s=medians["mta-sts"],
           dane_msgs_per_s=medians["dane"], mta_sts_share=round(shares["mta-sts"], 3),
           dane_share=round(shares["dane"], 3), rounds=figures, target=TARGET_SHARE,
           mta_sts_cpu_share=round(cpu_shares["mta-sts"], 3), dane_cpu_share=round(cpu_shares["dane"], 3),
           cpu_us_per_msg=cpu_us, receiver_tls=ciphers, load_average_before=load_before,
           load_average_after=load_after)  # fmt: skip


if __name__ == "__main__":
    main()
