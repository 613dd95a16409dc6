"""Two commits end to end, side by side: the A/B that `make bench` figures cannot settle alone.

    python -m tests.bench.compare_commits OLD [NEW] [--pairs 5] [-n 8000] [-c 20] [--delivery 2]

Each commit is checked out in a worktree of its own (under a temporary folder, removed at the end);
NEW defaults to this checkout as it is. Then `--pairs` times, OLD and NEW in turn: a fresh stack of that
commit's code (its services, on this machine's nats-server binary), 100 users, a warm-up of 1,000
messages, then N × 4 KiB over C connections with *this* checkout's load tool (`tests/bench/load/
smtp_ingest`, so the client is the same for both), until the queue counts every message delivered. Per
run it prints one JSON line: ingest and end-to-end msg/s, and the CPU that every process of the stack
spent per message (from /proc, from the first timed message until the last is delivered): steadier than
msg/s on a shared machine, and it says which service changed. At the end: the means, and the pairs'
ratios with their mean and standard error.

A commit's code runs with that worktree's `.venv` if `make setup` was run there, else with this
checkout's (the dependencies of nearby commits are the same); it must have `mailflow.stack.Stack` with
`delivery_instances` and `env` (every commit since 27 Nov 2026). Loopback only; each step bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.bench.common import CHECKS_OFF, bench_users, cpu_seconds, run_tool

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = {"MAILFLOW_LOG_LEVEL": "WARNING", **CHECKS_OFF}  # settings an old commit does not know are ignored


def child(a: argparse.Namespace) -> None:
    """One run, in a process whose `mailflow` is the commit under test (`tests` is this checkout's: the
    child runs from it, and the commit's trees hold no top-level `tests` before it)."""
    import httpx

    from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
    from mailflow.stack import Ports, Stack

    def ingest(port: int, n: int) -> dict:
        workload = ["-c", str(a.concurrency), "--size", "4096", "--users", "100", "-n", str(n)]
        return run_tool("smtp_ingest", "--port", str(port), *workload)

    with tempfile.TemporaryDirectory(prefix="compare-") as tmp, Stack(
        Path(tmp), Ports.free(), delivery_instances=a.delivery, env=ENV
    ) as st:
        headers = {ADMIN_TOKEN_HEADER: st.admin_token}
        bench_users(st, 100)

        def delivered() -> int:
            r = httpx.get(st.http_url("queue") + "/queue/counts", headers=headers, timeout=10)
            return r.json()["states"]["delivered"]

        def settle(total: int) -> None:
            deadline = time.monotonic() + 600
            while delivered() < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{total} messages not delivered in 600 s")
                time.sleep(0.05)

        ingest(st.ports.smtp, 1000)
        settle(1000)
        pids = {f"{name}{i}": p.popen.pid for (name, i), p in st.procs.items()}
        if st.nats is not None and st.nats.proc is not None:
            pids["nats-server"] = st.nats.proc.pid
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        started = time.monotonic()
        got = ingest(st.ports.smtp, a.messages)
        settle(1000 + a.messages)
        wall = time.monotonic() - started
        per = {k: round((cpu_seconds(p) - before[k]) * 1000 / a.messages, 3) for k, p in pids.items()}
    print(json.dumps({"ingest_msgs_per_s": got["msgs_per_sec"], "e2e_msgs_per_s": round(a.messages / wall, 1),
                      "cpu_ms_per_msg": round(sum(per.values()), 3), "cpu_ms": per}))  # fmt: skip


def checkout(rev: str, into: Path) -> Path:
    path = into / rev.replace("/", "_")
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True)
    return path


def run_one(tree: Path, a: argparse.Namespace) -> dict:
    python = tree / ".venv/bin/python"
    python = python if python.exists() else ROOT / ".venv/bin/python"
    paths = [tree / "shared", *sorted(p for p in (tree / "services").iterdir() if p.is_dir())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    cmd = [str(python), "-m", "tests.bench.compare_commits", "--child",
           "-n", str(a.messages), "-c", str(a.concurrency), "--delivery", str(a.delivery)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the run of {tree.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(runs: dict[str, list[dict]], old: str, new: str) -> None:
    for key in ("e2e_msgs_per_s", "cpu_ms_per_msg"):
        a, b = [r[key] for r in runs[old]], [r[key] for r in runs[new]]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        se = statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else float("nan")
        print(f"{key}: {old} {a} mean {statistics.mean(a):.3f}; {new} {b} mean {statistics.mean(b):.3f}; "
              f"{new}/{old} per pair {[round(r, 3) for r in ratios]}, mean {statistics.mean(ratios):.3f} "
              f"(standard error {se:.3f})")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", nargs="?", help="the commit to compare against")
    p.add_argument("new", nargs="?", default="", help="default: this checkout as it is")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--messages", "-n", type=int, default=8000)
    p.add_argument("--concurrency", "-c", type=int, default=20)
    p.add_argument("--delivery", type=int, default=2, help="delivery processes")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    if not a.old:
        p.error("name the commit to compare against")
    with tempfile.TemporaryDirectory(prefix="compare-commits-") as tmp:
        trees = {a.old: checkout(a.old, Path(tmp))}
        trees[a.new or "this checkout"] = checkout(a.new, Path(tmp)) if a.new else ROOT
        try:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for i in range(a.pairs):
                for name, tree in trees.items():
                    got = run_one(tree, a)
                    runs[name].append(got)
                    print(json.dumps({"pair": i + 1, "commit": name, **got}), flush=True)
            summary(runs, *trees)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
