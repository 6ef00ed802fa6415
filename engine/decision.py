"""The decision an engine answers with: small records, turned into plain maps at the edge.

These are built for every decision, so they are plain slotted dataclasses rather than
frozen ones: constructing a frozen dataclass costs about five times as much (each field
goes through ``object.__setattr__``). Treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Choice:
    """One chosen action."""

    rule: str  # the rule id, or "default"
    action: str
    channel: str | None
    params: dict

    def to_dict(self) -> dict:
        return {"rule": self.rule, "action": self.action, "channel": self.channel, "params": self.params}


@dataclass(slots=True)
class TraceEntry:
    """What happened to one rule the decision considered.

    ``outcome`` is one of: ``chosen``; ``passed_over`` (``reason``: ``holdout``, ``cap``,
    ``policy CHANNEL: cap N per D`` / ``policy all: cap N per D``, ``same_action``); ``not_reached`` (``limit``
    actions were already chosen); ``not_matched``; ``inactive``; ``error`` (``error``
    holds the message). ``conditions``, ``values``, ``cap`` and ``holdout`` are filled in
    by engine/explain.py.
    """

    rule: str
    outcome: str
    matched: bool
    priority: float | None = None
    reason: str | None = None
    error: str | None = None
    conditions: list | None = None  # each operand of the `when`'s top-level `and`: text, at, value
    values: dict | None = None  # source text -> value, for every field, segment, aggregate it reads
    cap: dict | None = None  # limit, count, per: the cap or policy that passed the rule over
    holdout: dict | None = None  # percent, bucket: the holdout that passed the rule over

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"rule": self.rule, "matched": self.matched, "outcome": self.outcome}
        if self.priority is not None:
            out["priority"] = self.priority
        if self.reason is not None:
            out["reason"] = self.reason
        if self.error is not None:
            out["error"] = self.error
        if self.conditions is not None:
            out["conditions"] = self.conditions
            out["values"] = self.values
        if self.cap is not None:
            out["cap"] = self.cap
        if self.holdout is not None:
            out["holdout"] = self.holdout
        return out


@dataclass(slots=True)
class Decision:
    customer_id: str
    choices: tuple[Choice, ...]  # first choice, then the alternatives
    degraded: bool = False
    trace: tuple[TraceEntry, ...] | None = None  # only when an explanation was asked for

    @property
    def first(self) -> Choice | None:
        return self.choices[0] if self.choices else None

    @property
    def rule(self) -> str | None:
        return self.choices[0].rule if self.choices else None

    @property
    def action(self) -> str | None:
        return self.choices[0].action if self.choices else None

    @property
    def channel(self) -> str | None:
        return self.choices[0].channel if self.choices else None

    @property
    def params(self) -> dict | None:
        return self.choices[0].params if self.choices else None

    @property
    def alternatives(self) -> list[Choice]:
        return list(self.choices[1:])

    def to_dict(self) -> dict:
        return decision_map(self.customer_id, self.choices, self.degraded, self.trace)


def decision_map(customer_id: str, choices, degraded: bool, trace) -> dict:
    """A decision as the map of INTERFACES.md (``Decision.to_dict``; ``Engine.decide_map``
    builds it straight from an outcome, without the ``Decision``)."""
    if choices:
        first = choices[0]
        out = {
            "customer_id": customer_id,
            "rule": first.rule,
            "action": first.action,
            "channel": first.channel,
            "params": first.params,
            "alternatives": [choice.to_dict() for choice in choices[1:]] if len(choices) > 1 else [],
            "degraded": degraded,
        }
    else:
        out = {
            "customer_id": customer_id,
            "rule": None,
            "action": None,
            "channel": None,
            "params": None,
            "alternatives": [],
            "degraded": degraded,
        }
    if trace is not None:
        out["trace"] = [entry.to_dict() for entry in trace]
    return out
