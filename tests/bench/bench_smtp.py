"""SMTP ingest benchmark (issue 3 §8): Mailflow's whole stack, then Postfix, the same workload.

Starts all six services and nats-server (`Stack`, free ports, JetStream fsync on every write), makes
user0..user99@bench.test (password pw), warms up with 1,000 messages, then runs our smtp_ingest tool
with the workload of the peer baseline: 20,000 messages of 4 KiB over 20 reused connections (RSET
between messages). It reports durable-accepted messages/s (every 250 came after JetStream's PubAck)
and p50/p99 latency from the end of DATA to the 250, plus the CPU each process used during the run
and the machine's load. Target: >= 600 msg/s, p99 < 50 ms. `MAILFLOW_BENCH_SMTP_N` overrides N.

Then the same against the peers' Postfix (tests/bench/peers, unless MAILFLOW_BENCH_PEERS=0): the same
warm-up and run, and the time until every accepted message is a file in its Maildir (Postfix
delivers as it accepts), with the CPU of Postfix's whole process tree. Last, the load tool's own
ceiling on this machine: the same run against Postfix's `smtp-sink` (C, answers 250 and stores
nothing; skipped if it is not installed): a server near that figure is measured by the tool's limit.

The figure that counts is with JetStream fsyncing every write (the stack's default: a 250 survives power
loss). A second run with `--sync-off` too (or only it) shows the same stack with nats-server's default
2-minute fsync (a 250 survives any process crash, not a power cut), i.e. how much of the cost is the disk.

Sender authentication (issue 14): the runs above have smtp-ingress's checks off, as Postfix here checks
nothing. One more run has them on (the defaults: SPF, DKIM, ARC reported, DMARC enforced) with the same
workload: a DNS server the benchmark starts publishes SPF, the DKIM key and DMARC p=reject for the load
tool's sender domain, and every message is DKIM-signed once, up front (dkimpy); after the warm-up the
resolver service has every answer cached. Its row says what share of the checks-off figure it keeps
(target: >= 80 %). Then, when Debian's rspamd and redis-server are installed, the same with smtp-ingress
asking a real rspamd (tests/support/rspamd.py) about every message: its figure, and rspamd's share of
the CPU every process of the run used. Every run asks only DNS servers it started (no internet DNS).

    python -m tests.bench.bench_smtp [--sync-off | --both]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mailflow.cli.dns import txt
from mailflow.stack import Ports, Stack
from tests.bench.common import (
    CHECKS_OFF,
    PEERS_NAME,
    bench_users,
    compare,
    load_average,
    millis,
    peers,
    rate,
    report,
    run_tool,
    smtp_sink,
    stack_cpu,
    tree_cpu,
)
from tests.bench.load.harness import SENDER
from tests.support import free_port, wait_for
from tests.support.dkim import rsa_key
from tests.support.dns import DnsServer
from tests.support.rspamd import Rspamd
from tests.support.rspamd import available as rspamd_available

TARGET_MSGS_PER_SEC = 600
TARGET_P99_MS = 50
WORKLOAD = ["-c", "20", "--size", "4096", "--users", "100"]
TARGET_CHECKS_SHARE = 80  # % of the checks-off rate with SPF + DKIM + DMARC on (issue 14)
SELECTOR = "bench"


def messages() -> int:
    return int(os.environ.get("MAILFLOW_BENCH_SMTP_N", "20000"))


def process_cpu(stack: Stack, spamd: Rspamd | None = None) -> dict[str, float]:
    out = stack_cpu(stack)
    if spamd is not None:  # redis-server, then rspamd's main process and its workers
        out["redis"] = tree_cpu(spamd.procs[0].pid)
        out["rspamd"] = tree_cpu(spamd.procs[1].pid)
    return out


def tool_ceiling(n: int = 5000) -> float | None:
    """smtp_ingest against Postfix's smtp-sink (stores nothing): the load tool's own limit here, now."""
    port = free_port()
    with smtp_sink("127.0.0.1", port) as running:
        if not running:
            return None
        return run_tool("smtp_ingest", "--port", str(port), *WORKLOAD, "-n", str(n))["msgs_per_sec"]


def main() -> None:
    modes = {"--sync-off": [False], "--both": [True, False]}.get(
        sys.argv[1] if len(sys.argv) > 1 else "", [True]
    )
    ours = {sync: run(sync) for sync in modes}
    checked = checks_share() if True in modes else None
    filtered = run(True, checks=True, spam_filter=True) if True in modes and rspamd_available() is None else None
    theirs = run_peers()
    ceiling = tool_ceiling()
    print(
        f"smtp_ingest's own ceiling here now (against Postfix's smtp-sink, which stores nothing): {ceiling} msg/s"
    )
    report("smtp_load_ceiling", msgs_per_sec=ceiling, load_average=load_average())
    for sync, result in ours.items():
        peer = theirs if sync else None
        compare(
            "SMTP ingest, 20 connections, 4 KiB"
            + (", fsync on every write" if sync else ", JetStream fsync off"),
            f"{rate(result['msgs_per_sec'])}, p99 {millis(result['p99_ms'])}",
            f"{rate(peer['msgs_per_sec'])}, p99 {millis(peer['p99_ms'])}" if peer else None,
        )
    if checked is not None:
        compare(
            "SMTP ingest as above, sender authentication on (SPF + DKIM + DMARC, signed, DNS cached), "
            "alternate rounds beside a stack with the checks off",
            f"{rate(checked['on'])} against {rate(checked['off'])}: {checked['share']} % "
            f"(target >= {TARGET_CHECKS_SHARE} %)",
            None,
        )
    if filtered is not None:
        cpu = filtered["cpu"]
        share = round(100 * cpu["rspamd"] / max(1e-9, sum(cpu.values())))
        compare(
            "SMTP ingest as above, sender authentication and rspamd on",
            f"{rate(filtered['msgs_per_sec'])}, p99 {millis(filtered['p99_ms'])}; rspamd {share} % of all CPU "
            f"({cpu['rspamd'] * 1000 / max(1, filtered['accepted']):.1f} ms per message)",
            None,
        )
    if ceiling:
        report(
            "note",
            text=f"smtp_ingest's ceiling on this machine (Postfix smtp-sink, stores nothing): {rate(ceiling)}",
        )


def sender_zone(key_file: Path) -> str:
    """SPF, the DKIM key (written to `key_file` for the load tool) and DMARC p=reject of the load tool's
    sender domain."""
    key = rsa_key()
    key_file.write_bytes(key.dkimpy)
    domain = SENDER.rpartition("@")[2]
    return (
        f'{domain}. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        f"{SELECTOR}._domainkey.{domain}. 300 IN TXT {txt(key.txt)}\n"
        f'_dmarc.{domain}. 300 IN TXT "v=DMARC1; p=reject"\n'
    )


def run(sync: bool, checks: bool = False, spam_filter: bool = False) -> dict:
    """One stack, warm-up, then the timed run; with `spam_filter`, smtp-ingress asks a real rspamd
    (tests/support/rspamd.py: Debian's, the repo's configuration, its modules that reach the internet
    off) about every message, and the figures include rspamd's CPU and its share of all."""
    n = messages()
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp, contextlib.ExitStack() as es:
        key_file = Path(tmp) / "dkim.pem"
        spamd = es.enter_context(Rspamd.running()) if spam_filter else None
        with DnsServer(sender_zone(key_file)) as dns:
            env = {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address, **({} if checks else CHECKS_OFF)}
            if spamd is not None:
                env["MAILFLOW_SMTP_RSPAMD_URL"] = spamd.url
            signing = ["--dkim-key", str(key_file), "--dkim-selector", SELECTOR]
            with Stack(Path(tmp) / "stack", Ports.free(), sync_always=sync, env=env) as stack:
                bench_users(stack, 100)
                port = str(stack.ports.smtp)
                run_tool("smtp_ingest", "--port", port, *WORKLOAD, *signing, "-n", "1000")  # warm-up: connections, caches
                load_before = load_average()
                cpu_before = process_cpu(stack, spamd)
                started = time.monotonic()
                result = run_tool("smtp_ingest", "--port", port, *WORKLOAD, *signing, "-n", str(n))
                wall = time.monotonic() - started
                cpu_after = process_cpu(stack, spamd)
                load_after = load_average()
    cpu = {name: round(cpu_after.get(name, 0) - before, 2) for name, before in cpu_before.items()}
    msgs, p50, p99 = result["msgs_per_sec"], result["p50_ms"], result["p99_ms"]
    fsync = "JetStream fsync on every write" if sync else "JetStream fsync every 2 min (nats default)"
    authn = "sender authentication on (SPF, DKIM, DMARC)" if checks else "sender authentication off"
    authn += ", rspamd on" if spam_filter else ""
    print(f"\nSMTP ingest, whole stack, {fsync}, {authn}: {n} x 4 KiB DKIM-signed, 20 connections (smtp_ingest)")
    print(f"{'':32} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'Mailflow smtp-ingress':32} {msgs:>8} {p50:>8} {p99:>8}")
    print(f"{'target':32} {'>=' + str(TARGET_MSGS_PER_SEC):>8} {'':>8} {'<' + str(TARGET_P99_MS):>8}")
    print(
        f"accepted {result['accepted']}, errors {result['errors']}, load average {load_before} -> {load_after}"
    )
    print(
        "CPU seconds during the run: "
        + ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    )
    print(f"(wall {wall:.1f} s)")
    report(
        ("smtp_ingest" if sync else "smtp_ingest_sync_off") + ("_checks_on" if checks else "") + ("_rspamd" if spam_filter else ""),
        msgs_per_sec=msgs,
        p50_ms=p50,
        p99_ms=p99,
        messages=n,
        accepted=result["accepted"],
        errors=result["errors"],
        target_msgs_per_sec=TARGET_MSGS_PER_SEC,
        target_p99_ms=TARGET_P99_MS,
        meets_target=bool(msgs >= TARGET_MSGS_PER_SEC and p99 is not None and p99 < TARGET_P99_MS),
        fsync_every_write=sync,
        sender_authentication=checks,
        load_average_before=load_before,
        cpu_seconds=cpu,
        cpu_ms_per_msg=round(sum(cpu.values()) * 1000 / max(1, result["accepted"]), 2),
        rspamd_cpu_share=round(cpu["rspamd"] / max(1e-9, sum(cpu.values())), 3) if spam_filter else None,
    )
    result["cpu"] = cpu
    return result


def checks_share(rounds: int = 3) -> dict:
    """What sender authentication costs, measured fairly: two stacks at once, one with the checks off and
    one with them on (the same users, DNS server and signed messages), each warmed up, then `rounds`
    rounds of N/rounds messages, off and on in turn, each round waiting until its stack has delivered
    everything before the next starts, so the machine's drift and the other stack's backlog touch both
    alike. The median of each and their ratio."""
    n = messages() // rounds
    with tempfile.TemporaryDirectory(prefix="bench-smtp-checks-") as tmp:
        key_file = Path(tmp) / "dkim.pem"
        signing = ["--dkim-key", str(key_file), "--dkim-selector", SELECTOR]
        with DnsServer(sender_zone(key_file)) as dns, contextlib.ExitStack() as es:
            stacks = {}
            for name, extra in (("off", CHECKS_OFF), ("on", {})):
                env = {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address, **extra}
                stacks[name] = es.enter_context(Stack(Path(tmp) / name, Ports.free(), env=env))
                bench_users(stacks[name], 100)
            sent = dict.fromkeys(stacks, 0)
            for name, st in stacks.items():  # warm-up: connections, caches
                sent[name] += run_tool("smtp_ingest", "--port", str(st.ports.smtp), *WORKLOAD, *signing, "-n", "1000")["accepted"]
                settle(st, sent[name])
            figures: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(rounds):
                for name, st in stacks.items():
                    got = run_tool("smtp_ingest", "--port", str(st.ports.smtp), *WORKLOAD, *signing, "-n", str(n))
                    if got["errors"]:
                        raise RuntimeError(f"checks {name}: {got['errors']} errors: {got}")
                    figures[name].append(got["msgs_per_sec"])
                    sent[name] += got["accepted"]
                    settle(st, sent[name])
    off, on = statistics.median(figures["off"]), statistics.median(figures["on"])
    share = round(100 * on / off)
    print(f"\nSender authentication, {rounds} alternate rounds of {n} x 4 KiB DKIM-signed: checks off {figures['off']}, "
          f"on {figures['on']} msg/s; medians {off} and {on}: {share} % (target >= {TARGET_CHECKS_SHARE} %)")  # fmt: skip
    report("smtp_ingest_checks_share", off_msgs_per_s=off, on_msgs_per_s=on, share_percent=share, rounds=figures,
           target_percent=TARGET_CHECKS_SHARE)  # fmt: skip
    return {"off": off, "on": on, "share": share}


def settle(st: Stack, total: int, timeout: float = 600) -> None:
    """Until the stack has delivered `total` messages in all: the next round starts on an idle stack."""
    import httpx

    from mailflow.contracts.rest import ADMIN_TOKEN_HEADER

    def done() -> bool:
        r = httpx.get(st.http_url("queue") + "/queue/counts", headers={ADMIN_TOKEN_HEADER: st.admin_token}, timeout=10)
        return r.json()["states"]["delivered"] >= total

    wait_for(done, timeout=timeout, interval=0.2, what=f"{total} messages delivered")


def run_peers() -> dict | None:
    """The same warm-up and run against Postfix; then until every accepted message is in its Maildir."""
    n = messages()
    with peers() as p:
        if p is None:
            return None
        port = str(p.ports.smtp)
        warm = run_tool("smtp_ingest", "--port", port, *WORKLOAD, "-n", "1000")
        wait_for(
            lambda: p.delivered() >= warm["accepted"], timeout=300, interval=0.05, what="Postfix's warm-up"
        )
        base, cpu_before, load_before = p.delivered(), tree_cpu(p.postfix.pid), load_average()
        started = time.perf_counter()
        result = run_tool("smtp_ingest", "--port", port, *WORKLOAD, "-n", str(n))
        wait_for(
            lambda: p.delivered() >= base + result["accepted"],
            timeout=600,
            interval=0.02,
            what="Postfix's delivery",
        )
        delivered_s = time.perf_counter() - started
        cpu = round(tree_cpu(p.postfix.pid) - cpu_before, 2)
    print(f"\n{PEERS_NAME}: Postfix, the same {n} x 4 KiB over 20 connections")
    print(f"accepted {result['msgs_per_sec']} msg/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
          f"all in Maildirs after {delivered_s:.1f} s ({result['accepted'] / delivered_s:.1f} msg/s); "
          f"Postfix CPU {cpu} s")  # fmt: skip
    report(
        "smtp_ingest_peers",
        server="postfix",
        msgs_per_sec=result["msgs_per_sec"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        messages=n,
        accepted=result["accepted"],
        errors=result["errors"],
        delivered_per_sec=round(result["accepted"] / delivered_s, 1),
        load_average_before=load_before,
        cpu_seconds=cpu,
        cpu_ms_per_msg=round(cpu * 1000 / max(1, result["accepted"]), 2),
    )
    return result


if __name__ == "__main__":
    main()
