"""`make bench`: run every benchmark module tests/bench/bench_<name>.py, one process each.

Each module has `main()` which prints a human table and one JSON line per figure, prefixed `BENCH `.
This runner collects those lines into bench-results/<timestamp>.jsonl and prints them together at the
end. A benchmark that fails is reported and the others still run; the exit status is 1 if any failed.
`python -m tests.bench.run_all smtp e2e` runs only those.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.jsonl")
    figures, failed = [], []
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
        print(f"=== bench {name}: {'FAILED' if name in failed else 'done'} in {time.monotonic() - started:.0f} s")
    with out.open("w") as f:
        for fig in figures:
            f.write(json.dumps(fig) + "\n")
    print(f"\n{len(figures)} figures -> {out}")
    for fig in figures:
        print("  " + json.dumps(fig))
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
