"""What the load of a large ruleset relies on: the bucket plan (now linear in rules, was
rules x event types) holds exactly what its definition says, and linking shares equal
event-type sets and policy tuples between rules."""

from __future__ import annotations

import types

from hypothesis import given, settings
from hypothesis import strategies as st

from nba.dsl import load_text
from nba.dsl.compiler import ANY_TYPE, Compiler

TYPES = ["a", "b", "c", "d"]


def by_definition(rules, rule_event_types):
    """A rule sits in the bucket of each of its types, and a rule of no type in every bucket,
    in declaration order."""
    names = sorted({t for rule in rules for t in rule_event_types.get(rule.id) or ()})
    plan = {key: [] for key in [*names, ANY_TYPE]}
    for index, rule in enumerate(rules):
        own = rule_event_types.get(rule.id)
        for key in plan:
            if own is None or (key is not None and key in own):
                plan[key].append(index)
    return plan


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.none() | st.frozensets(st.sampled_from(TYPES), min_size=1), max_size=30))
def test_the_bucket_plan_is_its_definition(type_sets):
    rules = [types.SimpleNamespace(id=f"r{i}") for i in range(len(type_sets))]
    rule_event_types = {f"r{i}": found for i, found in enumerate(type_sets)}
    compiler = Compiler.__new__(Compiler)
    compiler.checked = types.SimpleNamespace(rules=rules, rule_event_types=rule_event_types)
    plan = compiler.plan_buckets()
    assert plan == by_definition(rules, rule_event_types)
    assert list(plan) == list(by_definition(rules, rule_event_types))


def test_rules_share_equal_event_type_sets_and_policies():
    ruleset = load_text(
        "policy email: cap 2 per 1d\npolicy all: cap 5 per 1d\n"
        + "".join(f'rule r{i} when event.type == "buy" then a{i} via email end\n' for i in range(20))
        + 'rule s when event.type == "view" then b via push end\n'
    )
    buys = ruleset.rules[:20]
    assert len({id(rule.event_types) for rule in buys}) == 1
    assert len({id(rule.policies) for rule in buys}) == 1
    assert [p.channel for p in buys[0].policies] == ["email", None]
    assert [p.channel for p in ruleset.rules[20].policies] == [None]
    assert ruleset.rules[20].event_types == frozenset({"view"})
