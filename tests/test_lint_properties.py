"""Lint against the engine: generated rulesets, with the engine's decisions as the oracle.

- a rule reported ``never-matches`` matches for no generated event and profile;
- a rule reported ``shadowed`` by A: whenever it matches, A matches and the decision's
  first choice is not the rule;
- an operand reported ``redundant-condition``: the rule without it matches exactly when
  the rule with it does.

The rulesets use few fields and few constants so that contradictions and implications
are common, and the events and profiles give those fields values of every kind (null,
numbers around the constants, strings, booleans, NaN), so that DSL.md's null semantics and
decision-time errors are exercised. ``test_generated_rulesets_get_every_warning`` makes
sure the properties are not checked vacuously.
"""

from __future__ import annotations

import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import load_text
from nba.dsl.lint import lint_text
from nba.engine import Engine

NUMBERS = ["0", "1", "2", "3", "1.5"]
STRINGS = ['"a"', '"b"', '"m"']
NUMBER_FIELDS = ["event.a", "event.b"]


class RulesetGen:
    """Rule text from a source of choices (hypothesis's ``draw`` or a ``random.Random``)."""

    def __init__(self, pick):
        self.pick = pick  # pick(sequence) -> one item
        self.segments: list[str] = []

    def atom(self) -> str:
        kind = self.pick(["num", "num", "num", "num_in", "str", "str_in", "bool", "type", "null", "segment", "opaque"])
        if kind == "segment" and self.segments:
            return self.pick(self.segments)
        if kind == "num" or kind == "segment":
            return f"{self.pick(NUMBER_FIELDS)} {self.pick(['==', '!=', '<', '<=', '>', '>='])} {self.pick(NUMBERS)}"
        if kind == "num_in":
            return (
                f"{self.pick(NUMBER_FIELDS)} {self.pick(['in', 'not in'])} [{self.pick(NUMBERS)}, {self.pick(NUMBERS)}]"
            )
        if kind == "str":
            return f"profile.s {self.pick(['==', '!=', '<', '>='])} {self.pick(STRINGS)}"
        if kind == "str_in":
            return f"profile.s {self.pick(['in', 'not in'])} [{self.pick(STRINGS)}, {self.pick(STRINGS)}]"
        if kind == "bool":
            return self.pick(["profile.f", "not profile.f", "profile.f == true", "profile.f != false"])
        if kind == "opaque":  # what lint does not reason about: a value of its own
            return self.pick(
                [
                    "len(profile.s) > 1",
                    "event.a + 1 > 2",
                    "event.a > event.b",
                    'lower(profile.s) == "a"',
                    'profile.s in "abc"',
                    "event.a * 2 < 3",
                ]
            )
        if kind == "type":
            return self.pick(
                ['event.type == "t1"', 'event.type == "t2"', 'event.type in ["t1", "t2"]', 'event.type != "t2"']
            )
        return f"{self.pick(NUMBER_FIELDS + ['profile.s', 'profile.f'])} {self.pick(['==', '!='])} null"

    def condition(self, depth: int, operand: bool = False) -> str:
        """A condition; an ``operand`` of the `when` is not itself an ``and`` (lint sees the
        operands of a parenthesized ``and`` as operands of the `when`'s)."""
        shapes = ["atom", "atom", "atom", "or", "not", "if"] + ([] if operand else ["and"])
        shape = self.pick(shapes) if depth > 0 else "atom"
        if shape == "if":
            return f"(if {self.condition(depth - 1)} then {self.condition(depth - 1)} else {self.condition(depth - 1)})"
        if shape == "or":
            return f"({self.condition(depth - 1)} or {self.condition(depth - 1)})"
        if shape == "not":
            return f"not ({self.condition(depth - 1)})"
        if shape == "and":
            return f"({self.condition(depth - 1)} and {self.condition(depth - 1)})"
        return self.atom()

    def ruleset(self) -> tuple[str, list[tuple[str, list[str], str]]]:
        """The text, and per rule (id, operands, the rest of the rule's text)."""
        lines = []
        for name in ("s0", "s1")[: self.pick([0, 1, 2])]:
            lines.append(f"segment {name} = {self.condition(1)}")
            self.segments.append(name)
        if self.pick([False, False, True]):
            lines.append("policy email: cap 3 per 1d")
        rules = []
        for index in range(self.pick([2, 3, 4])):
            operands = [self.condition(self.pick([1, 1, 2]), operand=True) for _ in range(self.pick([1, 2, 3, 4]))]
            if rules and self.pick([False, True]):  # a narrower copy of an earlier rule
                earlier = self.pick([ops for _id, ops, _tail in rules])
                operands = earlier[: self.pick([1, 2, 3, 4])] + operands[: self.pick([1, 2])]
            tail = [f"  then act{index} via {self.pick(['web', 'email'])} with n = {self.pick(['1', 'event.a'])}"]
            if self.pick([False, False, False, True]):
                tail.append("  cap 2 per 1d")
            rules.append((f"r{index}", operands, f"  priority {self.pick(['0', '1', '2'])}\n" + "\n".join(tail)))
        return "\n".join(lines), rules


def rule_text(rule_id: str, operands: list[str], tail: str) -> str:
    return f"rule {rule_id}\n  when " + "\n   and ".join(operands) + f"\n{tail}\nend"


def ruleset_text(head: str, rules) -> str:
    return head + "\n" + "\n".join(rule_text(*rule) for rule in rules) + "\n"


VALUES = [None, 0, 1, 1.5, 2, 2.5, 3, 4, -1, "x", True, float("nan")]
STRING_VALUES = [None, "a", "b", "m", "z", "", "A", 1, True]
BOOL_VALUES = [None, True, False, "true", 1]


def sample(pick) -> tuple[dict, dict]:
    event = {"customer_id": "c1", "type": pick(["t1", "t2", "t3"])}
    profile = {}
    for name in ("a", "b"):
        value = pick(VALUES + ["missing"])
        if value != "missing":
            event[name] = value
    for name, values in (("s", STRING_VALUES), ("f", BOOL_VALUES)):
        value = pick(values + ["missing"])
        if value != "missing":
            profile[name] = value
    return event, profile


def matched_rules(engine: Engine, event: dict, profile: dict):
    engine.put_profile("c1", profile)
    decision = engine.decide(event, explain=True, dry_run=True)
    return {entry.rule for entry in decision.trace if entry.matched}, decision.rule


SHADOWED_BY = re.compile(r"`(\w+)` matches whenever it does")


def check_ruleset(head: str, rules, samples) -> dict[str, int]:
    """Check the three properties on one ruleset; return how many warnings of each code."""
    text = ruleset_text(head, rules)
    warnings = lint_text(text, "gen.rules", at=0)
    engine = Engine(load_text(text, "gen.rules"))
    lines = text.splitlines()
    rule_at_line = {}
    for number, line in enumerate(lines, 1):
        if line.startswith("rule "):
            rule_at_line[number] = line.split()[1]
    never, shadowed, redundant = set(), {}, []
    for warning in warnings:
        if warning.code == "never-matches":
            never.add(_rule_above(rule_at_line, warning.pos.line))
        elif warning.code == "shadowed":
            shadowed[_rule_above(rule_at_line, warning.pos.line)] = SHADOWED_BY.search(warning.message).group(1)
        elif warning.code == "redundant-condition":
            rule_id = _rule_above(rule_at_line, warning.pos.line)
            first_operand_line = next(n for n, r in rule_at_line.items() if r == rule_id) + 1
            redundant.append((rule_id, warning.pos.line - first_operand_line))
    variants = []
    for rule_id, operand in redundant:
        changed = [
            (rid, [op for i, op in enumerate(ops) if not (rid == rule_id and i == operand)], tail)
            for rid, ops, tail in rules
        ]
        variants.append((rule_id, operand, Engine(load_text(ruleset_text(head, changed), "gen.rules"))))
    for event, profile in samples:
        matched, first = matched_rules(engine, event, profile)
        context = f"\n{text}\nevent={event} profile={profile} matched={sorted(matched)}"
        for rule_id in never:
            assert rule_id not in matched, f"never-matches {rule_id} matched" + context
        for rule_id, winner in shadowed.items():
            if rule_id in matched:
                assert winner in matched and first != rule_id, f"{rule_id} shadowed by {winner}" + context
        for rule_id, operand, variant in variants:
            without, _first = matched_rules(variant, event, profile)
            assert (rule_id in matched) == (rule_id in without), f"operand {operand} of {rule_id} redundant" + context
    return {
        "never-matches": len(never),
        "shadowed": len(shadowed),
        "redundant-condition": len(redundant),
    }


def _rule_above(rule_at_line: dict[int, str], line: int) -> str:
    return rule_at_line[max(n for n in rule_at_line if n <= line)]


@st.composite
def rulesets_and_samples(draw):
    pick = lambda seq: draw(st.sampled_from(list(seq)))  # noqa: E731
    head, rules = RulesetGen(pick).ruleset()
    samples = [sample(pick) for _ in range(draw(st.integers(8, 16)))]
    return head, rules, samples


@settings(derandomize=True, max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets_and_samples())
def test_lint_warnings_agree_with_the_engine(case):
    head, rules, samples = case
    check_ruleset(head, rules, samples)


def test_generated_rulesets_get_every_warning():
    """Many seeded rulesets, each checked on many events; each code is reported often, so
    the properties above are not true for want of warnings."""
    rng = random.Random(20261206)
    pick = rng.choice
    totals = {"never-matches": 0, "shadowed": 0, "redundant-condition": 0}
    for _ in range(150):
        head, rules = RulesetGen(pick).ruleset()
        samples = [sample(pick) for _ in range(40)]
        for code, count in check_ruleset(head, rules, samples).items():
            totals[code] += count
    print(totals)
    assert all(count >= 10 for count in totals.values()), totals
