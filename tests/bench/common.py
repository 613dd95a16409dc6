"""What every benchmark shares: our load tools, a stack with bench users, the peers, reporting.

The load tools are tests/bench/load/*.py (`run_tool` runs one and returns its JSON line); the peers
are a throwaway Postfix + Dovecot (tests/bench/peers), measured with the same tools right after
Mailflow unless MAILFLOW_BENCH_PEERS=0 (`make bench PEERS=0`). A tool that fails raises RuntimeError
with its stderr; peers that cannot run here stop the benchmark with what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PEERS_NAME = "Postfix + Dovecot"
# smtp-ingress's sender authentication off: the peers check nothing, and without a DNS server of the
# benchmark's own the resolver would ask the machine's DNS. bench_smtp measures it on as well.
CHECKS_OFF = {f"MAILFLOW_SMTP_CHECK_{c}": "off" for c in ("SPF", "DKIM", "ARC", "DMARC")}


def report(name: str, **figures) -> None:
    """One figure line: collected by tests/bench/run_all.py."""
    print("BENCH " + json.dumps({"bench": name, **figures}), flush=True)


def compare(workload: str, mailflow: str, peers: str | None) -> None:
    """One row of the side-by-side table run_all prints at the end."""
    report("compare", workload=workload, mailflow=mailflow, peers=peers if peers is not None else "—")


def run_tool(tool: str, *args: str, timeout: float = 1800) -> dict:
    """Run tests/bench/load/<tool>.py (it prints one JSON line) and return that JSON."""
    cmd = [sys.executable, "-m", f"tests.bench.load.{tool}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{tool} printed no JSON:\n{proc.stdout[-2000:]}")


def peers_wanted() -> bool:
    return os.environ.get("MAILFLOW_BENCH_PEERS", "1") != "0"


@contextlib.contextmanager
def peers(**options) -> Iterator:
    """A running tests.bench.peers.Peers, stopped afterwards; None when the peers are switched off."""
    if not peers_wanted():
        yield None
        return
    from tests.bench.peers import Peers, missing

    if lacking := missing():
        sys.exit(
            f"{PEERS_NAME} need {', '.join(lacking)}: `make bench` installs the packages "
            "(tests/bench/peers/install.sh); `make bench PEERS=0` measures Mailflow alone"
        )
    with Peers(**options) as running:
        yield running


def rate(value: float | None, unit: str = "msg/s") -> str:
    return "-" if value is None else f"{value:,.0f} {unit}"


def millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU seconds a process used; with `children`, also those of its children it has reaped (how a
    Postfix or Dovecot master accounts for its short-lived workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, as /proc/loadavg has them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def stack_cpu(stack) -> dict[str, float]:
    """CPU seconds so far of each service (all its instances, by service name) and of the stack's
    nats-server(s)."""
    out: dict[str, float] = {}
    for (name, _), proc in stack.procs.items():
        out[name] = out.get(name, 0.0) + cpu_seconds(proc.popen.pid)
    nodes = getattr(stack.nats, "nodes", [stack.nats])  # a NatsCluster's, or the one server
    pids = [n.proc.pid for n in nodes if n is not None and n.proc is not None]
    if pids:
        out["nats-server"] = sum(cpu_seconds(pid) for pid in pids)
    return out


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of a daemon's whole process tree: the master, its reaped children, and the live
    descendants (their CPU so far)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    total, todo = cpu_seconds(root_pid, children=True), [root_pid]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                total += cpu_seconds(pid, children=True)
                todo.append(pid)
    return total


def bench_users(
    stack, n: int = 100, domain: str = "bench.test", password: str = "pw", first: int = 0
) -> None:
    """user<first>..user<first+n-1>@bench.test with password pw, through the admin REST API."""
    import httpx

    from mailflow.contracts.rest import ADMIN_TOKEN_HEADER

    headers = {ADMIN_TOKEN_HEADER: stack.admin_token}
    with httpx.Client(base_url=stack.http_url("mailbox-store"), headers=headers, timeout=60) as c:
        r = c.post("/admin/domains", json={"name": domain})
        if r.status_code not in (201, 409):
            r.raise_for_status()
        for i in range(first, first + n):
            r = c.post("/admin/users", json={"address": f"user{i}@{domain}", "password": password})
            if r.status_code not in (201, 409):
                r.raise_for_status()


def delivered(stack) -> int:
    """Recipients the stack's queue counts delivered (its admin REST API)."""
    import httpx

    from mailflow.contracts.rest import ADMIN_TOKEN_HEADER

    r = httpx.get(stack.http_url("queue") + "/queue/counts", headers={ADMIN_TOKEN_HEADER: stack.admin_token}, timeout=10)
    return r.json()["states"]["delivered"]


def wait_delivered(stack, target: int, timeout: float = 600) -> float:
    """time.perf_counter() once the queue counts `target` recipients delivered; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if delivered(stack) >= target:
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"only {delivered(stack)} of {target} delivered after {timeout} s")


def metrics_text(stack, service: str, index: int = 0) -> str:
    """The /metrics page of one instance of a service of the stack."""
    import httpx

    return httpx.get(f"http://{stack.ports.host}:{stack.procs[(service, index)].http_port}/metrics", timeout=10).text


def counter(text: str, name: str, labels: str = "") -> float:
    """The value of metric `name` in a /metrics page: the sample with exactly `labels` (as written there,
    e.g. 'mode="enforce",result="success"'), or with no `labels` the sum of all its samples."""
    pat = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{[^}]*\})?") + r" ([0-9.e+]+)"
    return sum(float(v) for v in re.findall(pat, text))


@contextlib.contextmanager
def smtp_sink(host: str, port: int) -> Iterator[bool]:
    """Postfix's `smtp-sink` (C: answers 250 to everything and stores nothing) on host:port while the
    block runs; yields False when it cannot run here (not installed, or not root: it drops privileges to
    the postfix user)."""
    from tests.support import wait_for
    from tests.support.daemons import greets

    sink = shutil.which("smtp-sink")
    if sink is None or os.geteuid() != 0:
        yield False
        return
    proc = subprocess.Popen([sink, "-u", "postfix", "-h", "sink.localdomain", f"{host}:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: greets(host, port, b"220"), timeout=10, what="smtp-sink")
        yield True
    finally:
        proc.terminate()
        proc.wait(10)
