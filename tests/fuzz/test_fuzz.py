"""The fuzz tier (`make test-attack`, in CI): every target of targets.py
- replays its kept corpus (tests/fuzz/corpus/<target>/): each input passes, within its time budget;
- runs Hypothesis: arbitrary bytes, and corpus inputs mutated by splicing, cutting, repeating and the
  target's own tokens (MAILFLOW_FUZZ_EXAMPLES examples per target, 100 by default);
- runs Atheris, coverage-guided, for MAILFLOW_FUZZ_CI_SECONDS per target (3 by default; `make fuzz` is the
  long run), and fails on any finding it writes.
A finding's input is shown by Hypothesis (shrunk) or left by Atheris in fuzz-findings/<target>/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, Target, execute

pytestmark = [pytest.mark.attack, pytest.mark.timeout(600)]

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("MAILFLOW_FUZZ_EXAMPLES", "100"))
ATHERIS_SECONDS = int(os.environ.get("MAILFLOW_FUZZ_CI_SECONDS", "3"))


def corpus(target: Target) -> list[bytes]:
    d = CORPUS / target.name
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


@st.composite
def mutated(draw, seeds: list[bytes], tokens: tuple[bytes, ...], max_len: int) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("insert", "delete", "token", "repeat", "byte")))
        if op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "token" and tokens:
            data[i:i] = draw(st.sampled_from(tokens))
        elif op == "repeat":
            piece = bytes(data[i : i + draw(st.integers(1, 32))])
            data[i:i] = piece * draw(st.integers(1, 200))
        elif op == "byte" and i < len(data):
            data[i] = draw(st.integers(0, 255))
    return bytes(data[:max_len])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_replays_clean(name):
    target = TARGETS[name]
    inputs = corpus(target)
    assert inputs, f"no kept corpus for {name}: run `make fuzz`"
    for data in inputs:
        execute(target, data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_hypothesis(name):
    target = TARGETS[name]
    seeds = corpus(target) or [b""]
    strategy = st.one_of(st.binary(max_size=target.max_len), mutated(seeds, target.tokens, target.max_len))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(strategy)
    def run(data: bytes) -> None:
        execute(target, data)

    run()


def test_atheris_finds_nothing_new(capsys):
    pytest.importorskip("atheris", reason="Atheris has wheels for Linux x86-64 only")
    from tests.fuzz import run

    code = run.main(["--seconds", str(ATHERIS_SECONDS), "--jobs", "2"])
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + out)
    assert code == 0, out
