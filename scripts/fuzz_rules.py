"""Fuzz the rule loader for a while: the property of tests/test_dsl_fuzz.py, random seeds.

    .venv/bin/python scripts/fuzz_rules.py --seconds 300 [--kind grammar,tokens,bytes]

Each round runs hypothesis on one kind of input (text from the grammar, token mutants
or byte mutants of rules/) with a fresh seed; a failure prints hypothesis' smallest
failing example and the seed, and the script exits 1. Inputs that load and inputs that
give a LoadError both count as passes; anything else (another exception, a load slower
than --limit seconds) is a failure.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import rule_fuzz  # noqa: E402

KINDS = ("grammar", "tokens", "bytes")


def round_of(kind: str, round_seed: int, examples: int, limit_s: float, directory: Path):
    common = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    if kind == "grammar":

        @common
        @seed(round_seed)
        @given(rule_fuzz.grammar_texts())
        def run(text):
            rule_fuzz.timed(rule_fuzz.check_text, text, limit_s=limit_s)
    elif kind == "tokens":

        @common
        @seed(round_seed)
        @given(rule_fuzz.token_mutants())
        def run(mutant):
            rule_fuzz.timed(rule_fuzz.check_text, mutant[1], mutant[0], limit_s=limit_s)
    else:

        @common
        @seed(round_seed)
        @given(rule_fuzz.byte_mutants())
        def run(mutant):
            files = dict(rule_fuzz.SEED_TEXTS)
            files[mutant[0]] = mutant[1]
            rule_fuzz.timed(rule_fuzz.check_directory, directory, files, limit_s=limit_s)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kind", default=",".join(KINDS))
    parser.add_argument("--examples", type=int, default=200, help="examples per round")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds one load may take")
    parser.add_argument("--seed", type=int, default=None, help="the first round's seed (default: random)")
    args = parser.parse_args(argv)
    kinds = args.kind.split(",")
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    rounds = 0
    with tempfile.TemporaryDirectory(prefix="nba-fuzz-") as tmp:
        while time.monotonic() < deadline:
            kind = kinds[rounds % len(kinds)]
            round_seed = rng.randrange(2**32)
            started = time.monotonic()
            try:
                round_of(kind, round_seed, args.examples, args.limit, Path(tmp))()
            except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the smallest failing example's error
                print(f"FAILED: {kind}, seed {round_seed}: {type(exc).__name__}: {exc}", flush=True)
                return 1
            rounds += 1
            print(
                f"round {rounds}: {kind}, seed {round_seed}, {args.examples} examples, "
                f"{time.monotonic() - started:.1f} s: ok",
                flush=True,
            )
    print(f"{rounds} rounds, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
