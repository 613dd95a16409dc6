"""Cross-check: our load tools (tests/bench/load) and the team's (../shared/bench) on the same servers.

    python -m tests.bench.crosscheck [--tools ../shared/bench] [--rounds 2] [--quick]

For each target, Mailflow's whole stack and then the peers (Postfix + Dovecot, tests/bench/peers),
and for each workload, it runs our tool and theirs with the same options, `--rounds` times, the order
swapped every round (ours first, then theirs first) so a drift in the machine's load hits both alike.
It prints both figures per workload and target: on the same server they should agree within the
noise of back-to-back runs. Where they did not, the difference was in the tool (docs/performance.md).

Not part of `make bench` (which needs nothing outside the repository); the other tools must be the
ones that printed RESULTS.md's figures (smtp_load.py, e2e_latency.py, imap_load.py, pop3_load.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailflow.stack import Ports, Stack
from tests.bench.common import CHECKS_OFF, PEERS_NAME, ROOT, bench_users, peers, report, run_tool


def workloads(quick: bool) -> list[tuple[str, str, list[str], str, list[str], str, float]]:
    """(name, our tool, our options, their tool, their options, figure, scale); {smtp}, {imap} and
    {pop3} are filled in with the target's ports."""
    n, lat, idle, rounds, logins = (2000, 50, 10, 5, 20) if quick else (5000, 100, 20, 10, 50)
    smtp = ["--port", "{smtp}", "-n", str(n), "-c", "20", "--size", "4096", "--users", "100"]
    e2e = ["--port", "{smtp}", "--imap-port", "{imap}"]
    reads = ["--first-user", "80", "--users", "10", "-c", "10"]
    return [  # reads first, on mailboxes of exactly K messages; then latency at light load; then ingest
        (
            "IMAP FETCH msg/s",
            "imap_fetch",
            ["--port", "{imap}", *reads, "--rounds", str(rounds)],
            "imap_load.py",
            ["--port", "{imap}", *reads, "--rounds", str(rounds), "--login-rounds", "0"],
            "msgs_per_sec",
            1,
        ),  # fmt: skip
        (
            "IMAP logins/s",
            "imap_logins",
            ["--port", "{imap}", *reads, "--rounds", str(logins)],
            "imap_load.py",
            ["--port", "{imap}", *reads, "--rounds", "0", "--login-rounds", str(logins)],
            "logins_per_sec",
            1,
        ),  # fmt: skip
        (
            "POP3 RETR msg/s",
            "pop3_retr",
            ["--port", "{pop3}", *reads, "--rounds", str(rounds)],
            "pop3_load.py",
            ["--port", "{pop3}", *reads, "--rounds", str(rounds)],
            "msgs_per_sec",
            1,
        ),  # fmt: skip
        (
            "e2e poll p50 ms",
            "e2e_latency",
            [*e2e, "-n", str(lat)],
            "e2e_latency.py",
            [*e2e, "-n", str(lat)],
            "p50_s",
            1000,
        ),
        (
            "e2e IDLE p50 ms",
            "e2e_latency",
            [*e2e, "-n", str(idle), "--mode", "idle"],
            "e2e_latency.py",
            [*e2e, "-n", str(idle), "--mode", "idle"],
            "p50_s",
            1000,
        ),  # fmt: skip
        ("SMTP ingest msg/s", "smtp_ingest", smtp, "smtp_load.py", smtp, "msgs_per_sec", 1),
        ("SMTP ingest p99 ms", "smtp_ingest", smtp, "smtp_load.py", smtp, "p99_ms", 1),
    ]


def theirs(tools: Path, tool: str, args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, str(tools / tool), *args], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(target: str, ports: dict[str, int], tools: Path, rounds: int, quick: bool) -> list[dict]:
    """Both tools on every workload of one target; the same run of a tool serves every figure it gives."""
    run_tool("imap_fetch", "--port", str(ports["imap"]), "--first-user", "80", "--users", "10", "--fill",
             "-k", "100", "--rounds", "0")  # fmt: skip
    run_tool(
        "imap_fetch", "--port", str(ports["imap"]), "--first-user", "80", "--users", "10", "--rounds", "2"
    )
    run_tool(
        "smtp_ingest", "--port", str(ports["smtp"]), "-n", "1000", "--users", "79"
    )  # warm-up, not to user80..
    cache: dict[tuple, dict] = {}
    rows = []
    for name, ours_tool, ours_args, their_tool, their_args, figure, scale in workloads(quick):
        got: dict[str, list[float]] = {"ours": [], "theirs": []}
        for r in range(rounds):
            for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                tool, args = (ours_tool, ours_args) if side == "ours" else (their_tool, their_args)
                args = [a.format(**ports) for a in args]
                key = (side, tool, tuple(args), r)
                if key not in cache:
                    cache[key] = run_tool(tool, *args) if side == "ours" else theirs(tools, tool, args)
                    if cache[key].get("errors"):
                        raise RuntimeError(
                            f"{side} {tool}: {cache[key]['errors']} errors: {cache[key].get('first_error')}"
                        )
                value = cache[key].get(figure)
                if value is not None:
                    got[side].append(round(value * scale, 1))
        row = {"target": target, "workload": name, "ours": got["ours"], "theirs": got["theirs"]}
        if got["ours"] and got["theirs"]:
            row["ratio"] = round(statistics.median(got["ours"]) / statistics.median(got["theirs"]), 3)
        report("crosscheck", **row)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tools", type=Path, default=ROOT.parent / "shared" / "bench", help="the other tools' folder"
    )
    p.add_argument("--rounds", type=int, default=2, help="runs of each tool per workload and target")
    p.add_argument("--quick", action="store_true", help="smaller runs")
    a = p.parse_args(argv)
    if not (a.tools / "smtp_load.py").exists():
        sys.exit(f"no smtp_load.py in {a.tools}: --tools names the folder of the other tools")
    started = time.strftime("%Y-%m-%d %H:%M")
    env = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING", **CHECKS_OFF}
    with (
        tempfile.TemporaryDirectory(prefix="mailflow-crosscheck-") as tmp,
        Stack(Path(tmp), Ports.free(), env=env) as st,
    ):
        bench_users(st)
        ports = {"smtp": st.ports.smtp, "imap": st.ports.imap, "pop3": st.ports.pop3}
        rows = measure("Mailflow", ports, a.tools, a.rounds, a.quick)
    with peers() as pr:
        if pr is not None:
            ports = {"smtp": pr.ports.smtp, "imap": pr.ports.imap, "pop3": pr.ports.pop3}
            rows += measure(PEERS_NAME, ports, a.tools, a.rounds, a.quick)
    print(
        f"\ncross-check {started}–{time.strftime('%H:%M')}: ours (tests/bench/load) and theirs ({a.tools}),"
    )
    print("the same options, order swapped every round; ratio = median ours / median theirs\n")
    print("| target | workload | ours | theirs | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['workload']} | {' / '.join(map(str, r['ours']))} | "
              f"{' / '.join(map(str, r['theirs']))} | {r.get('ratio', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
