"""What an explanation adds to each trace entry: conditions, values, cap counts, holdouts.

Called by the decision procedure only when an explanation was asked for (so a decision
without one costs nothing more), after the decision is made (so it never changes it):
- ``conditions`` and ``values`` for every rule that was tested (dsl/explain.py evaluates
  them with the ruleset's own generated code, on the decision's context);
- ``cap``: ``{"limit", "count", "per"}`` for a rule passed over for its cap or a policy,
  with the count the decision saw (contacts in the window, and what this decision had
  already chosen for a policy);
- ``holdout``: ``{"percent", "bucket"}`` for a rule passed over for its holdout (the
  customer's point in [0, 100): held out when it is below ``percent``).
"""

from __future__ import annotations

from nba.engine.holdout import holdout_point

TESTED = frozenset({"chosen", "passed_over", "not_reached", "not_matched", "error"})


def annotate(trace: list, ruleset, context, contacts: list, event: dict, count_contacts) -> None:
    """Fill in each entry of ``trace`` (a list of TraceEntry) in place."""
    explainer = ruleset.explainer
    by_id = {rule.id: rule for rule in ruleset.rules}
    t = event["time"]
    chosen_above: list = []  # the candidates come first in the trace, in ranking order
    for entry in trace:
        rule = by_id.get(entry.rule)
        if rule is None or entry.outcome not in TESTED:
            continue  # the default, or an inactive rule (its `when` was not tested)
        if entry.outcome == "chosen":
            chosen_above.append(rule)
        rule_explainer = explainer(rule.index) if explainer is not None else None
        if rule_explainer is not None:
            entry.conditions, entry.values = rule_explainer.explain(context)
        if entry.outcome != "passed_over":
            continue
        if entry.reason == "holdout":
            entry.holdout = {"percent": rule.holdout, "bucket": round(holdout_point(rule.id, event["customer_id"]), 4)}
        elif entry.reason == "cap" and rule.cap is not None:
            limit, window = rule.cap
            entry.cap = {"limit": limit, "count": count_contacts(contacts, t, window, rule=rule.id), "per": window}
        else:
            for policy in rule.policies:
                if policy.label == entry.reason:
                    already = sum(1 for c in chosen_above if policy.channel is None or c.channel == policy.channel)
                    seen = count_contacts(contacts, t, policy.window, channel=policy.channel) + already
                    entry.cap = {"limit": policy.limit, "count": seen, "per": policy.window}
