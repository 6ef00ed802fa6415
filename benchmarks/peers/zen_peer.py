"""zen-engine (GoRules) expressions, indexed by event type, in two forms: one expression
per rule tried in ranking order, and one per event type chaining its rules with `?:`; its
decision tables (about 150 µs a call in 2.1.x) are not used.

The two forms:

- one compiled expression per rule, tried in ranking order (each ``evaluate`` converts the
  context into zen's values again, a few µs);
- one compiled expression per event type, the type's rules chained in ranking order with
  ``?:`` (``c1 ? "a1" : c2 ? "a2" : null``), so the context is converted once.

zen's decision tables would be the obvious tool, but in 2.1.x a table costs about 150 µs a
call (a known regression).
"""

from __future__ import annotations

from benchmarks.peers import package_version
from benchmarks.synthetic import Rule, Workload, condition_text, literal

name = "zen-engine"
version = package_version("zen-engine")


def rule_expression(rule: Rule) -> str:
    return " and ".join(condition_text(c) for c in rule.conditions)


def chained_expression(rules: list[Rule]) -> str:
    expression = "null"
    for rule in reversed(rules):
        expression = f"({rule_expression(rule)}) ? {literal(rule.action)} : {expression}"
    return expression


def build(workload: Workload):
    """One expression per rule."""
    import zen

    by_type = {
        event_type: tuple((rule.action, zen.compile_expression(rule_expression(rule)).evaluate) for rule in rules)
        for event_type, rules in workload.ranked_by_type().items()
    }

    def decide(event, profile):
        context = {"event": event, "profile": profile}
        for action, evaluate in by_type.get(event["type"], ()):
            if evaluate(context) is True:
                return action
        return None

    return decide


def build_chained(workload: Workload):
    """One expression per event type."""
    import zen

    by_type = {
        event_type: zen.compile_expression(chained_expression(rules)).evaluate
        for event_type, rules in workload.ranked_by_type().items()
        if rules
    }

    def decide(event, profile):
        evaluate = by_type.get(event["type"])
        return evaluate({"event": event, "profile": profile}) if evaluate is not None else None

    return decide


variants = {
    "zen-engine (expression per rule)": build,
    "zen-engine (one expression per type)": build_chained,
}
