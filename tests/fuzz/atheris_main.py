"""One target under Atheris (libFuzzer, coverage-guided): `python -m tests.fuzz.atheris_main TARGET
[libFuzzer arguments and corpus directories]`. Run by run.py, which also reads the statistics this writes.

The target runs once before the code is instrumented (its lazy imports load then), so that everything it
reaches is instrumented. A finding (any exception from the target, including a blown time budget) makes
libFuzzer write the input as a crash file and exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import sys

INSTRUMENTED = [
    "mailflow",
    "mailflow_smtp_ingress",
    "mailflow_imap_pop3",
    "mailflow_queue",
    "mailflow_delivery",
    "aiosmtpd.proxy_protocol",
    "tests.fuzz",
]


def main() -> None:
    import atheris

    logging.basicConfig(level=logging.CRITICAL)
    # Only our code (and aiosmtpd's PROXY parser, which smtp-ingress uses) is instrumented: all of the
    # libraries would take minutes and slow every execution down.
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import TARGETS, execute

        target = TARGETS[sys.argv[1]]
        target.check(b"")  # load what the target imports lazily, inside the instrumenting import hook
    # Warm up on the corpus (first calls pay for lazy imports and caches; they are no slow input).
    for d in (a for a in sys.argv[2:] if not a.startswith("-") and os.path.isdir(a)):
        for name in sorted(os.listdir(d))[:50]:
            with open(os.path.join(d, name), "rb") as f:
                target.check(f.read()[: target.max_len])
    stats_path = os.environ.get("MAILFLOW_FUZZ_STATS")
    slowest = [0.0]

    def write_stats() -> None:
        if stats_path:
            s = target.stats
            with open(stats_path, "w") as f:
                json.dump({"executions": s.executions, "slowest_ms_per_kib": s.slowest_ms_per_kib,
                           "slowest_len": s.slowest_len, "slowest_ms": s.slowest_ms}, f)  # fmt: skip

    def one(data: bytes) -> None:
        if len(data) > target.max_len:
            return
        execute(target, data, instrumented=True)
        s = target.stats
        if s.slowest_ms_per_kib > slowest[0] or s.executions % 2000 == 0:
            slowest[0] = s.slowest_ms_per_kib
            write_stats()

    # libFuzzer's -merge runs argv[0] again as a command: run.py hands us an executable wrapper for that.
    argv0 = os.environ.get("MAILFLOW_FUZZ_ARGV0", sys.argv[0])
    atheris.Setup([argv0, *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
