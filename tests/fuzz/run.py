"""Coverage-guided fuzzing of every target with Atheris: `python -m tests.fuzz.run [--seconds N] [--keep]
[target ...]` (`make fuzz` runs it with --keep and MAILFLOW_FUZZ_SECONDS per target; CI runs it short).

Each target runs in its own process (libFuzzer exits the process), from its kept corpus
tests/fuzz/corpus/<target>/ plus a scratch directory for what it finds. With --keep, the inputs that reach
new code are merged into the kept corpus (libFuzzer -merge=1 keeps the smallest set that covers as much;
inputs are at most the target's max_len). A finding leaves its input in fuzz-findings/<target>/ and makes
the run fail: turn it into a named regression test in that parser's unit tests, then fix it.

Prints, per target: executions, executions per second, the slowest input per KiB (inputs under 1 KiB count
as 1 KiB), and the findings. Exits 1 if there was any finding, 2 if Atheris cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fuzz.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
FINDINGS = ROOT / "fuzz-findings"


def _dict_file(target: Target, path: Path) -> None:
    def esc(b: bytes) -> str:
        return "".join(chr(c) if 0x20 <= c < 0x7F and c not in (0x22, 0x5C) else f"\\x{c:02x}" for c in b)

    path.write_text("".join(f'"{esc(t)}"\n' for t in target.tokens))


# Targets run in threads (--jobs). A process forked by one thread inherits every file another thread has
# open at that moment, until it execs; a wrapper script still open for writing in such a child makes
# its own exec fail with ETXTBSY ("Text file busy", seen in CI). So writing a wrapper and starting a
# process (fork and exec, both inside Popen) never overlap.
_SPAWNING = threading.Lock()


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    with _SPAWNING:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace")  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def fuzz(target: Target, seconds: int, keep: bool) -> dict:
    corpus = CORPUS / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    findings = FINDINGS / target.name
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        tmpdir = Path(tmp)
        scratch, stats = tmpdir / "new", tmpdir / "stats.json"
        scratch.mkdir()
        findings.mkdir(parents=True, exist_ok=True)
        args = [f"-max_total_time={seconds}", f"-max_len={target.max_len}", "-timeout=20", "-rss_limit_mb=2048",
                f"-artifact_prefix={findings}/", "-print_final_stats=1"]  # fmt: skip
        if target.tokens:
            _dict_file(target, tmpdir / "dict")
            args.append(f"-dict={tmpdir / 'dict'}")
        wrapper = tmpdir / "fuzz-one"
        with _SPAWNING:  # see _run: no other target forks while this file is open for writing
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tests.fuzz.atheris_main {target.name} "$@"\n')
            wrapper.chmod(0o755)
        env = dict(os.environ, MAILFLOW_FUZZ_STATS=str(stats), MAILFLOW_FUZZ_ARGV0=str(wrapper), PYTHONPATH=str(ROOT))
        cmd = [str(wrapper)]
        started = time.monotonic()
        proc = _run([*cmd, *args, str(scratch), str(corpus)], env, seconds + 600)
        took = time.monotonic() - started
        m = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        executions = int(m.group(1)) if m else 0
        found = sorted(p for p in findings.iterdir()) if findings.exists() else []
        result = {"target": target.name, "executions": executions, "seconds": round(took, 1),
                  "exit": proc.returncode, "findings": [str(p) for p in found]}  # fmt: skip
        if stats.exists():
            result.update({k: v for k, v in json.loads(stats.read_text()).items() if k != "executions"})
        if proc.returncode != 0 or found:
            tail = "\n".join(proc.stderr.splitlines()[-40:])
            result["log"] = tail
        elif keep and any(scratch.iterdir()):
            _run([*cmd, "-merge=1", f"-max_len={target.max_len}", str(corpus), str(scratch)], env, 600)
        if not any(findings.iterdir()):
            findings.rmdir()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("MAILFLOW_FUZZ_SECONDS", "60")))
    ap.add_argument("--keep", action="store_true", help="merge new coverage into tests/fuzz/corpus/")
    ap.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time (one process each)")
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    a = ap.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError as exc:
        print(f"Atheris is not installed ({exc}): pip install atheris (Linux x86-64, CPython 3.11)")
        return 2
    print(f"{'target':<14} {'executions':>11} {'exec/s':>8} {'slowest ms/KiB':>15} {'(bytes)':>8}  findings")
    bad = 0
    with ThreadPoolExecutor(max(a.jobs, 1)) as pool:
        results = pool.map(lambda name: fuzz(TARGETS[name], a.seconds, a.keep), a.targets)
    for name, r in zip(a.targets, results, strict=True):
        rate = r["executions"] / max(r["seconds"], 1e-9)
        print(f"{name:<14} {r['executions']:>11} {rate:>8.0f} {r.get('slowest_ms_per_kib', 0):>15.2f} "
              f"{r.get('slowest_len', 0):>8}  {len(r['findings']) or '-'}", flush=True)  # fmt: skip
        if r["findings"] or r["exit"] != 0:
            bad += 1
            print(r.get("log", ""), "\n".join(r["findings"]), sep="\n", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
