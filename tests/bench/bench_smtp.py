"""SMTP ingest benchmark (issue 3 §8): the peer workload against the whole local stack.

Starts all six services and nats-server (`Stack`, free ports, JetStream fsync on every write), makes
user0..user99@bench.test (password pw), warms up briefly, then runs the team's `smtp_load.py` with the
workload of ../shared/bench/RESULTS.md: 20,000 messages of 4 KiB over 20 reused connections. It reports
durable-accepted messages/s (every 250 came after JetStream's PubAck) and p50/p99 latency from the end
of DATA to the 250, plus the CPU each process used during the run and the machine's load.
Target: >= 600 msg/s, p99 < 50 ms. `MAILFLOW_BENCH_SMTP_N` overrides N for a quick look.

The figure that counts is with JetStream fsyncing every write (the stack's default: a 250 survives power
loss). A second run with `--sync-off` too (or only it) shows the same stack with nats-server's default
2-minute fsync (a 250 survives any process crash, not a power cut), i.e. how much of the cost is the disk.

    python -m tests.bench.bench_smtp [--sync-off | --both]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailflow.stack import Ports, Stack
from tests.bench.common import bench_users, peer_bench_dir, report, run_tool
from tests.support import free_port, wait_for

TARGET_MSGS_PER_SEC = 600
TARGET_P99_MS = 50
# quoted from ../shared/bench/RESULTS.md (the peer team's machine), not measured by this benchmark
PEERS = {"Postfix, RESULTS.md (accepted)": 514, "aiosmtpd sink, RESULTS.md": 1879}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def process_cpu(stack: Stack) -> dict[str, float]:
    out = {name: cpu_seconds(proc.popen.pid) for (name, i), proc in stack.procs.items() if i == 0}
    if stack.nats is not None and stack.nats.proc is not None:
        out["nats-server"] = cpu_seconds(stack.nats.proc.pid)
    return out


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def calibrate(n: int = 5000) -> float | None:
    """The peers' reference on this machine right now: aiosmtpd answering 250 to everything (RESULTS.md
    measured 1,879 msg/s on a quiet machine). A much lower figure means the machine is busy and every
    number below is depressed by about as much."""
    sink = peer_bench_dir() / "aiosmtpd_sink.py"
    if not sink.exists():
        return None
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(sink), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: _answers(port), timeout=10, what="the aiosmtpd sink")
        result = run_tool("smtp_load.py", "--port", str(port), "-c", "20", "--size", "4096", "-n", str(n))
        return result["msgs_per_sec"]
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    modes = {"--sync-off": [False], "--both": [True, False]}.get(
        sys.argv[1] if len(sys.argv) > 1 else "", [True]
    )
    reference = calibrate()
    print(
        f"calibration: aiosmtpd sink (stores nothing) {reference} msg/s now; 1879 in RESULTS.md (quiet machine)"
    )
    report(
        "smtp_calibration_aiosmtpd_sink", msgs_per_sec=reference, results_md=1879, load_average=load_average()
    )
    for sync in modes:
        run(sync, reference)


def run(sync: bool, reference: float | None = None) -> None:
    n = int(os.environ.get("MAILFLOW_BENCH_SMTP_N", "20000"))
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
        with Stack(Path(tmp), Ports.free(), sync_always=sync) as stack:
            bench_users(stack, 100)
            port = str(stack.ports.smtp)
            common = ["--port", port, "-c", "20", "--size", "4096", "--users", "100"]
            run_tool("smtp_load.py", *common, "-n", "1000")  # warm-up: connections, caches, JIT-free Python
            load_before = load_average()
            cpu_before = process_cpu(stack)
            started = time.monotonic()
            result = run_tool("smtp_load.py", *common, "-n", str(n))
            wall = time.monotonic() - started
            cpu_after = process_cpu(stack)
            load_after = load_average()
    cpu = {name: round(cpu_after.get(name, 0) - before, 2) for name, before in cpu_before.items()}
    rate, p50, p99 = result["msgs_per_sec"], result["p50_ms"], result["p99_ms"]
    fsync = "JetStream fsync on every write" if sync else "JetStream fsync every 2 min (nats default)"
    print(f"\nSMTP ingest, whole stack, {fsync}: {n} x 4 KiB, 20 connections (smtp_load.py)")
    print(f"{'':32} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'Mailflow smtp-ingress':32} {rate:>8} {p50:>8} {p99:>8}")
    print(f"{'target':32} {'>=' + str(TARGET_MSGS_PER_SEC):>8} {'':>8} {'<' + str(TARGET_P99_MS):>8}")
    for name, value in PEERS.items():
        print(f"{name:32} {value:>8}")
    print(f"{'aiosmtpd sink, measured now':32} {reference!s:>8}")
    print(
        f"accepted {result['accepted']}, errors {result['errors']}, load average {load_before} -> {load_after}"
    )
    print(
        "CPU seconds during the run: "
        + ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    )
    print(f"(wall {wall:.1f} s)")
    report(
        "smtp_ingest" if sync else "smtp_ingest_sync_off",
        msgs_per_sec=rate,
        p50_ms=p50,
        p99_ms=p99,
        messages=n,
        accepted=result["accepted"],
        errors=result["errors"],
        target_msgs_per_sec=TARGET_MSGS_PER_SEC,
        target_p99_ms=TARGET_P99_MS,
        meets_target=bool(rate >= TARGET_MSGS_PER_SEC and p99 is not None and p99 < TARGET_P99_MS),
        fsync_every_write=sync,
        load_average_before=load_before,
        aiosmtpd_sink_now=reference,
        cpu_seconds=cpu,
    )


if __name__ == "__main__":
    main()
