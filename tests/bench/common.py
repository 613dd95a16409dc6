"""What every benchmark shares: where the peer tools are, a stack with bench users, reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def peer_bench_dir() -> Path:
    """The team's load tools (../shared/bench beside the checkout, or MAILFLOW_PEER_BENCH)."""
    path = Path(os.environ.get("MAILFLOW_PEER_BENCH") or ROOT.parent / "shared" / "bench")
    if not (path / "smtp_load.py").exists():
        sys.exit(f"peer bench tools not found in {path}; set MAILFLOW_PEER_BENCH")
    return path


def report(name: str, **figures) -> None:
    """One figure line: collected by tests/bench/run_all.py."""
    print("BENCH " + json.dumps({"bench": name, **figures}), flush=True)


def run_tool(tool: str, *args: str, timeout: float = 1800) -> dict:
    """Run a peer tool (it prints one JSON line) and return that JSON."""
    cmd = [sys.executable, str(peer_bench_dir() / tool), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{tool} printed no JSON:\n{proc.stdout[-2000:]}")


def bench_users(stack, n: int = 100, domain: str = "bench.test", password: str = "pw", first: int = 0) -> None:
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
