"""durable-rules: a Rete engine in C, driven through its Python DSL; each rule's `pri` is
its place in the ranking, so the one rule that fires is the decision.

Every rule is a ``when_all`` on one message, the event with the profile nested under
``profile``; the event type is one of the rule's conditions (Rete does the indexing).
durable-rules fires one rule per event (an event is consumed by the rule it matches), the
one with the lowest ``pri``, so each rule's ``pri`` is its place in the ranking and the rule
that fires is the decision. An event no rule matches raises MessageNotHandledException.
The engine's ruleset is created at the first post, so ``build`` posts a probe event. With
2.0.28, creating a ruleset of 8,000 of these rules fails ("Could not create ruleset, error
code: 106"); 4,000 work.
"""

from __future__ import annotations

import functools
import itertools
import operator

from benchmarks.peers import package_version
from benchmarks.synthetic import Condition, Rule, Workload

name = "durable-rules"
version = package_version("durable-rules")

_ruleset_numbers = itertools.count()


def durable_condition(m, condition: Condition):
    subject = getattr(m.profile, condition.field) if condition.scope == "profile" else getattr(m, condition.field)
    if condition.op == "in":
        return functools.reduce(operator.or_, [subject == v for v in condition.value])
    return {
        "==": operator.eq,
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
    }[condition.op](subject, condition.value)


def build(workload: Workload):
    import durable.engine
    import durable.lang as dl

    ruleset_name = f"nba_bench_{next(_ruleset_numbers)}"
    fired: list = [None]

    def add_rule(rank: int, rule: Rule) -> None:
        test = functools.reduce(
            operator.and_,
            [dl.m.type == rule.event_type] + [durable_condition(dl.m, c) for c in rule.conditions],
        )

        chosen = rule.action

        def action(_context):  # one parameter: a second one would make it asynchronous
            fired[0] = chosen

        action.__name__ = rule.id
        dl.when_all(dl.pri(rank), test)(action)

    with dl.ruleset(ruleset_name):
        for rank, rule in enumerate(workload.ranked):
            add_rule(rank, rule)

    post = dl.post
    not_handled = durable.engine.MessageNotHandledException
    try:  # durable-rules creates the engine's ruleset at the first post: make that part of the build
        post(ruleset_name, {"type": "__nba_bench_probe__"})
    except not_handled:
        pass

    def decide(event, profile):
        message = dict(event)
        message["profile"] = profile
        fired[0] = None
        try:
            post(ruleset_name, message)
        except not_handled:
            return None
        return fired[0]

    return decide
