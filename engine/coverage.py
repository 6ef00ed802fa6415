"""Replay coverage: what each rule did over a replay, and why a rule is rarely chosen.

Fed with every decision's trace (an explained decision), it counts per rule: the events
of its types (the events whose decisions considered it), how often it matched, was
chosen (first or as an alternative), was passed over, by reason, failed or was inactive;
and, per condition of its ``when``, how often that condition was not true. For a rule
chosen rarely or never the summary names the condition that was false most often:

    vip_upsell: chosen 0 of 4,210 page_view events; `profile.lifetime_value >= 1000` false in 99%
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

RARELY = 0.01  # a rule chosen for fewer than this share of its events is "rarely chosen"


@dataclass
class RuleCoverage:
    rule: str
    events: int = 0
    matched: int = 0
    chosen: int = 0
    errors: int = 0
    inactive: int = 0
    passed_over: Counter = field(default_factory=Counter)
    event_types: Counter = field(default_factory=Counter)
    tested: int = 0  # events whose decision evaluated its conditions
    conditions: list[str] = field(default_factory=list)  # their text, in order
    not_true: Counter = field(default_factory=Counter)  # condition index -> times false or null

    def add(self, event_type: str, entry: dict) -> None:
        self.events += 1
        self.event_types[event_type] += 1
        outcome = entry["outcome"]
        if entry.get("matched"):
            self.matched += 1
        if outcome == "chosen":
            self.chosen += 1
        elif outcome == "passed_over":
            self.passed_over[_reason_key(entry.get("reason"))] += 1
        elif outcome == "error":
            self.errors += 1
        elif outcome == "inactive":
            self.inactive += 1
        conditions = entry.get("conditions")
        if conditions:
            self.tested += 1
            if not self.conditions:
                self.conditions = [c["text"] for c in conditions]
            for index, condition in enumerate(conditions):
                if condition["value"] is not True:
                    self.not_true[index] += 1

    def most_often_false(self) -> tuple[str, float] | None:
        """The condition that was not true most often, and its share of the tested events."""
        if not self.not_true or not self.tested:
            return None
        index, count = max(self.not_true.items(), key=lambda item: (item[1], -item[0]))
        return self.conditions[index], count / self.tested

    def rarely_chosen(self) -> bool:
        return self.events > 0 and self.chosen < RARELY * self.events

    def to_dict(self) -> dict:
        found = self.most_often_false()
        return {
            "rule": self.rule,
            "events": self.events,
            "event_types": dict(self.event_types),
            "matched": self.matched,
            "chosen": self.chosen,
            "passed_over": dict(self.passed_over),
            "errors": self.errors,
            "inactive": self.inactive,
            "most_often_false": {"condition": found[0], "share": found[1]} if found else None,
        }


def _reason_key(reason: str | None) -> str:
    """``policy email: cap 2 per 7d`` counts as ``policy``; the other reasons as they are."""
    if reason and reason.startswith("policy"):
        return "policy"
    return reason or "unknown"


class Coverage:
    """Every rule's coverage over a replay, in declaration order."""

    def __init__(self, rule_ids: list[str]):
        self.rules = {rule_id: RuleCoverage(rule_id) for rule_id in rule_ids}

    def add(self, event_type: str, trace: list[dict]) -> None:
        for entry in trace:
            rule = self.rules.get(entry["rule"])
            if rule is not None:
                rule.add(event_type, entry)

    def to_dict(self) -> list[dict]:
        return [rule.to_dict() for rule in self.rules.values()]

    def format(self) -> list[str]:
        """The summary's coverage table, then a line per rule chosen rarely or never."""
        rows = [rule for rule in self.rules.values()]
        if not rows:
            return []
        width = max(len(rule.rule) for rule in rows)
        reasons = sorted({reason for rule in rows for reason in rule.passed_over})
        head = (
            f"  {'rule':<{width}}  {'events':>9}  {'matched':>9}  {'chosen':>9}"
            + "".join(f"  {reason:>9}" for reason in reasons)
            + f"  {'errors':>7}"
        )
        lines = ["coverage (passed over by reason):", head]
        for rule in rows:
            lines.append(
                f"  {rule.rule:<{width}}  {rule.events:>9,}  {rule.matched:>9,}  {rule.chosen:>9,}"
                + "".join(f"  {rule.passed_over.get(reason, 0):>9,}" for reason in reasons)
                + f"  {rule.errors:>7,}"
            )
        for rule in rows:
            if not rule.rarely_chosen():
                continue
            found = rule.most_often_false()
            types = " or ".join(name for name, _count in rule.event_types.most_common(3))
            text = f"{rule.rule}: chosen {rule.chosen:,} of {rule.events:,} {types} events"
            if found is not None:
                text += f"; `{found[0]}` false in {found[1]:.0%}"
            elif rule.matched:
                text += f"; matched {rule.matched:,} times, passed over {sum(rule.passed_over.values()):,}"
            lines.append(text)
        return lines
