"""cel-python: one CEL program per rule (CompiledRunner), indexed by event type; the event
and profile are converted with `json_to_cel` once per decision.
"""

from __future__ import annotations

from benchmarks.peers import package_version
from benchmarks.synthetic import Condition, Workload, literal

name = "cel-python"
version = package_version("cel-python")


def cel_condition(condition: Condition) -> str:
    return f"{condition.scope}.{condition.field} {condition.op} {literal(condition.value)}"


def build(workload: Workload):
    import celpy

    environment = celpy.Environment(runner_class=celpy.CompiledRunner)

    def program(rule):
        return environment.program(environment.compile(" && ".join(cel_condition(c) for c in rule.conditions)))

    by_type = {
        event_type: tuple((rule.action, program(rule).evaluate) for rule in rules)
        for event_type, rules in workload.ranked_by_type().items()
    }
    to_cel = celpy.json_to_cel

    def decide(event, profile):
        activation = {"event": to_cel(event), "profile": to_cel(profile)}
        for action, evaluate in by_type.get(event["type"], ()):
            if evaluate(activation):
                return action
        return None

    return decide
