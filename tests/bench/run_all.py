"""`make bench`: run every benchmark module tests/bench/bench_<name>.py, one process each.

Each module measures Mailflow and then, with the same load tools and workload, Postfix + Dovecot
(tests/bench/peers; `--no-peers` or MAILFLOW_BENCH_PEERS=0 skips them). It prints a human table and
one JSON line per figure, prefixed `BENCH `; lines of the kind "compare" are rows of the side-by-side
table. This runner collects the lines into bench-results/<timestamp>.jsonl and prints, at the end, the
figures and the table (workload | Mailflow | Postfix + Dovecot). A benchmark that fails is reported and
the others still run; the exit status is 1 if any failed. `python -m tests.bench.run_all smtp e2e`
runs only those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["smtp", "e2e", "imap", "store"]  # the way mail flows; any other benchmark after these
ROOT = HERE.parent.parent


def table(figures: list[dict]) -> str:
    """The side-by-side table, Markdown, from the "compare" rows (and the notes under it)."""
    rows = [f for f in figures if f.get("bench") == "compare"]
    lines = ["| workload | Mailflow | Postfix + Dovecot |", "|---|---|---|"]
    lines += [f"| {r['workload']} | {r['mailflow']} | {r['peers']} |" for r in rows]
    lines += [f"\n{f['text']}" for f in figures if f.get("bench") == "note"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "--no-peers" in argv:
        argv = [a for a in argv if a != "--no-peers"]
        os.environ["MAILFLOW_BENCH_PEERS"] = "0"
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    names = argv or sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.jsonl")
    figures, failed = [], []
    started_all = time.time()
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", f"tests.bench.bench_{name}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in proc.stdout:
            sys.stdout.write(line)
            if line.startswith("BENCH "):
                figures.append(json.loads(line[6:]))
        if proc.wait() != 0:
            failed.append(name)
        print(
            f"=== bench {name}: {'FAILED' if name in failed else 'done'} in {time.monotonic() - started:.0f} s"
        )
    with out.open("w") as f:
        for fig in figures:
            f.write(json.dumps(fig) + "\n")
    print(f"\n{len(figures)} figures -> {out}")
    for fig in figures:
        if fig.get("bench") not in ("compare", "note"):
            print("  " + json.dumps(fig))
    print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M', time.localtime(started_all))}–{time.strftime('%H:%M')} "
          f"on this machine ({os.cpu_count()} cores), one after the other:\n")  # fmt: skip
    print(table(figures))
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
