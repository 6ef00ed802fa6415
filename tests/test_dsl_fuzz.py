"""Fuzzing the rule loader (issue 21): text from the grammar and mutants of rules/ either
load or give a LoadError pointing inside the file; never another exception, never a hang.
Fixed seeds and bounded examples; scripts/fuzz_rules.py runs the same for longer."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from rule_fuzz import SEED_TEXTS, byte_mutants, check_directory, check_text, grammar_texts, timed, token_mutants

BOUNDED = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,  # a loaded machine; the time limit below is per example, and generous
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
LIMIT_S = 60.0  # far above a load of these files (milliseconds): only a hang or a blow-up trips it


@BOUNDED
@given(grammar_texts())
def test_text_from_the_grammar(text):
    timed(check_text, text, limit_s=LIMIT_S)


@BOUNDED
@given(token_mutants())
def test_token_mutants_of_the_example_rules(mutant):
    name, text = mutant
    timed(check_text, text, name, limit_s=LIMIT_S)


_DIRECTORY = tempfile.TemporaryDirectory(prefix="nba-fuzz-")


@settings(BOUNDED, max_examples=80)
@given(byte_mutants())
def test_byte_mutants_in_a_ruleset_directory(mutant):
    """One file of rules/ mutated at the byte level (invalid UTF-8 included), loaded with the others."""
    name, data = mutant
    files = dict(SEED_TEXTS)
    files[name] = data
    timed(check_directory, Path(_DIRECTORY.name), files, limit_s=LIMIT_S)


def test_the_unmutated_rules_load():
    for name, data in SEED_TEXTS.items():
        check_text(data.decode("utf-8"), name)
