"""The hand-written Python baseline, as a person would write it: a dict from event type
to that type's rules in priority order, each a plain lambda over the event and profile
dicts; the first that holds gives the action.

The source is generated from the workload (as a person would type it), then compiled once.
"""

from __future__ import annotations

import platform

from benchmarks.synthetic import Condition, Workload

name = "hand-written Python"
version = platform.python_version()


def python_condition(condition: Condition) -> str:
    subject = f"{condition.scope[0]}[{condition.field!r}]"
    if condition.op == "in":
        return f"{subject} in {{{', '.join(repr(v) for v in condition.value)}}}"
    return f"{subject} {condition.op} {condition.value!r}"


def render_source(workload: Workload) -> str:
    lines = ["RULES_BY_TYPE = {"]
    for event_type, rules in workload.ranked_by_type().items():
        lines.append(f"    {event_type!r}: (")
        for rule in rules:
            test = " and ".join(python_condition(c) for c in rule.conditions)
            lines.append(f"        ({rule.action!r}, lambda e, p: {test}),")
        lines.append("    ),")
    lines += [
        "}",
        "",
        "def decide(event, profile):",
        "    for action, holds in RULES_BY_TYPE.get(event['type'], ()):",
        "        if holds(event, profile):",
        "            return action",
        "    return None",
    ]
    return "\n".join(lines) + "\n"


def build(workload: Workload):
    namespace: dict = {}
    exec(compile(render_source(workload), "<reference>", "exec"), namespace)  # noqa: S102 - the peer is source this benchmark writes
    return namespace["decide"]
