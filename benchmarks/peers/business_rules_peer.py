"""business-rules (Venmo): JSON rules run with `run_all` in ranking order, stopping at the
first that fires, indexed by event type.

Each event and profile field is a rule variable (``event_amount``, ``profile_tier``); an
``in`` list is an ``any`` of ``equal_to``. A type's rules are given in ranking order with
``stop_on_first_trigger``, so the first rule to fire is the decision.
"""

from __future__ import annotations

from benchmarks.peers import package_version
from benchmarks.synthetic import EVENT_NUMBERS, EVENT_STRINGS, PROFILE_NUMBERS, PROFILE_STRINGS, Condition, Workload

name = "business-rules"
version = package_version("business-rules")

OPERATORS = {
    "==": "equal_to",
    ">": "greater_than",
    ">=": "greater_than_or_equal_to",
    "<": "less_than",
    "<=": "less_than_or_equal_to",
}


def json_condition(condition: Condition) -> dict:
    variable = f"{condition.scope}_{condition.field}"
    if condition.op == "in":
        return {"any": [{"name": variable, "operator": "equal_to", "value": v} for v in condition.value]}
    return {"name": variable, "operator": OPERATORS[condition.op], "value": condition.value}


def variables_class():
    from business_rules.variables import BaseVariables, numeric_rule_variable, string_rule_variable

    def reader(scope: str, field: str):
        def read(self):
            return (self.event if scope == "event" else self.profile)[field]

        read.__name__ = f"{scope}_{field}"
        return read

    members = {}
    for scope, numbers, strings in (
        ("event", EVENT_NUMBERS, EVENT_STRINGS),
        ("profile", PROFILE_NUMBERS, PROFILE_STRINGS),
    ):
        for field in numbers:
            members[f"{scope}_{field}"] = numeric_rule_variable(reader(scope, field))
        for field in strings:
            members[f"{scope}_{field}"] = string_rule_variable(reader(scope, field))

    def __init__(self, event, profile):
        self.event = event
        self.profile = profile

    members["__init__"] = __init__
    return type("SyntheticVariables", (BaseVariables,), members)


def actions_class():
    from business_rules.actions import BaseActions, rule_action
    from business_rules.fields import FIELD_TEXT

    class DecisionActions(BaseActions):
        def __init__(self):
            self.action = None

        @rule_action(params={"action": FIELD_TEXT})
        def decide(self, action):
            self.action = action

    return DecisionActions


def build(workload: Workload):
    from business_rules import run_all

    variables, actions = variables_class(), actions_class()
    by_type = {
        event_type: [
            {
                "conditions": {"all": [json_condition(c) for c in rule.conditions]},
                "actions": [{"name": "decide", "params": {"action": rule.action}}],
            }
            for rule in rules
        ]
        for event_type, rules in workload.ranked_by_type().items()
    }

    def decide(event, profile):
        rules = by_type.get(event["type"])
        if not rules:
            return None
        chosen = actions()
        run_all(rules, variables(event, profile), chosen, stop_on_first_trigger=True)
        return chosen.action

    return decide
