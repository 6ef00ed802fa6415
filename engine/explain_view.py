"""An explained decision as a tree a person reads in a terminal (`nba decide --explain`).

Each rule the decision considered, with its outcome, then each condition of its ``when``
marked true (✓), false (✗) or null/failed (?), with its place, then the values the
conditions read. JSON stays the output everywhere else (pipes, files, the socket).
"""

from __future__ import annotations

from nba.engine.jsontext import dumps

MARKS = {True: "✓", False: "✗", None: "?"}
_OUTCOMES = {"not_matched": "not matched", "not_reached": "not reached", "passed_over": "passed over"}


def render(decision: dict) -> str:
    lines = [headline(decision)]
    if decision.get("degraded"):
        lines.append("  degraded: the customer's state could not be read in time; capped rules were passed over")
    for entry in decision.get("trace") or []:
        lines.append("")
        lines += rule_lines(entry)
    return "\n".join(lines) + "\n"


def headline(decision: dict) -> str:
    if decision.get("action") is None:
        return f"decision for {decision.get('customer_id')}: nothing"
    via = f" via {decision['channel']}" if decision.get("channel") else ""
    params = f" with {_params(decision['params'])}" if decision.get("params") else ""
    text = f"decision for {decision.get('customer_id')}: {decision['action']}{via}{params} (rule {decision['rule']})"
    for alternative in decision.get("alternatives") or []:
        via = f" via {alternative['channel']}" if alternative.get("channel") else ""
        text += f"\n  then: {alternative['action']}{via} (rule {alternative['rule']})"
    return text


def rule_lines(entry: dict) -> list[str]:
    mark = "✓" if entry.get("outcome") == "chosen" else ("·" if entry.get("matched") else "✗")
    outcome = _OUTCOMES.get(entry.get("outcome"), entry.get("outcome"))
    detail = []
    if entry.get("priority") is not None:
        detail.append(f"priority {_number(entry['priority'])}")
    if entry.get("reason"):
        detail.append(f"reason: {entry['reason']}")
    cap = entry.get("cap")
    if cap:
        detail.append(f"{cap['count']} of {cap['limit']} already in the window")
    holdout = entry.get("holdout")
    if holdout:
        detail.append(f"bucket {holdout['bucket']:.2f} < {_number(holdout['percent'])}%")
    head = f"{mark} {entry['rule']}  {outcome}" + (f"  ({', '.join(detail)})" if detail else "")
    lines = [head]
    if entry.get("error"):
        lines.append(f"    error: {entry['error']}")
    conditions = entry.get("conditions") or []
    width = max((len(c["text"]) for c in conditions), default=0)
    for condition in conditions:
        text = f"    {MARKS.get(condition['value'], '?')} {condition['text']:<{width}}  {condition['at']}"
        if condition.get("error"):
            text += f"  error: {condition['error']}"
        lines.append(text)
    values = entry.get("values")
    if values:
        lines.append("      " + ", ".join(f"{name} = {dumps(value)}" for name, value in values.items()))
    return lines


def _params(params: dict) -> str:
    return ", ".join(f"{name} = {dumps(value)}" for name, value in params.items())


def _number(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
