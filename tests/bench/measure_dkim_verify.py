"""What DKIM verification and ARC cost (issue 14): a measuring script, not a test and not part of `make bench`.

    .venv/bin/python -m tests.bench.measure_dkim_verify [--runs 50]

For messages of 4 KiB, 1 MiB and 25 MiB (each line with two spaces to canonicalize away at its end; "plain":
none) signed by our signer (RSA-2048 + Ed25519, relaxed/relaxed), the
median time of `mailflow.authn.dkim.verify` for both signatures with the keys from an in-memory table
(DNS time is the resolver's, cached), dkimpy 1.1.8's `verify` of the RSA signature for comparison, and
for 25 MiB the longest pause of the event loop while verifying (a task that sleeps 1 ms at a time
notes each gap). Then ARC for 4 KiB: `seal` over a chain of 1, and `verify_chain` of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import dkim as dkimpy

from mailflow.authn.arc import seal, verify_chain
from mailflow.authn.dkim import Keys, sign_with, verify
from tests.support.dkim import TableDns, ed25519_key, rsa_key
from tests.support.loop import watch
from tests.support.opendkim import only_signature

LINE = (
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod  \r\n"  # spaces to canonicalize
)
PLAIN = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"  # nothing to change
HEAD = b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: measuring\r\nDate: Mon, 07 Dec 2026 03:00:00 +0000\r\n\r\n"


def message(size: int, line: bytes = LINE) -> bytes:
    return HEAD + line * (size // len(line))


async def median_ms(runs: int, call) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main(runs: int) -> None:
    r, e = rsa_key(), ed25519_key()
    keys = Keys("a.test", "s1", r.private, e.private)
    dns = TableDns({"s1-rsa._domainkey.a.test": [r.txt], "s1-ed25519._domainkey.a.test": [e.txt]})
    now = int(time.time())
    cases = [
        ("4 KiB", 4096, runs, LINE),
        ("1 MiB", 1 << 20, max(5, runs // 5), LINE),
        ("25 MiB", 25 << 20, 3, LINE),
    ]
    cases += [("4 KiB plain", 4096, runs, PLAIN), ("1 MiB plain", 1 << 20, max(5, runs // 5), PLAIN)]
    for label, size, n, line in cases:
        signed = await sign_with(message(size, line), keys, now)
        assert [x.result for x in await verify(signed, dns, now)] == ["pass", "pass"]
        ours = await median_ms(n, lambda s=signed: verify(s, dns, now))
        rsa_only = only_signature(signed, b"rsa-sha256")

        async def theirs(m=rsa_only):
            assert dkimpy.verify(m, dnsfunc=dns.dnsfunc)

        out = f"{label:>11}: ours, both signatures {ours:8.2f} ms; dkimpy, RSA alone {await median_ms(min(n, 5), theirs):8.2f} ms"
        if size > 1 << 20:
            watched = await watch(verify(signed, dns, now))
            out += f"; one verify with a ticking loop {watched.took * 1000:.0f} ms, longest loop pause {watched.longest * 1000:.1f} ms"
        print(out, flush=True)
    fwd = TableDns(dns.table | {"s1-rsa._domainkey.fwd.test": [r.txt]})
    small = b"Authentication-Results: mx.a.test; spf=pass\r\n" + message(4096)
    first = (
        b"".join(dkimpy.arc_sign(small, b"s1-rsa", b"a.test", r.dkimpy, b"mx.a.test", timestamp=now)) + small
    )
    chain = await verify_chain(first, fwd, now)
    fkeys = Keys("fwd.test", "s1", r.private, e.private)
    sealed = await seal(first, "arc=pass", fkeys, "mx.fwd.test", now, chain)
    assert (await verify_chain(sealed, fwd, now)).result == "pass"
    t_seal = await median_ms(runs, lambda: seal(first, "arc=pass", fkeys, "mx.fwd.test", now, chain))
    t_chain = await median_ms(runs, lambda: verify_chain(sealed, fwd, now))
    print(f"ARC 4 KiB: seal over a chain of 1 {t_seal:.2f} ms; verify_chain of 2 sets {t_chain:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
