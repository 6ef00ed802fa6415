"""What a ruleset needs of a customer's state, and what the decision for one event type reads.

``StateNeeds`` (with a ``HistoryNeed`` per event type) is the language's answer; the
engine's stores read and keep state by it.

The ruleset's ``StateNeeds`` (dsl/compiler.py) is everything any decision may read: it
sets what is recorded and how long it is kept. A decision for one event type reads less:
only the histories that the aggregates of its own bucket's rules (their `when`, priority
and parameters), of the `on` updates of its type and of the default use, each over the
longest window that they use there; and the contacts only as far back as the caps and
policies of its bucket's rules look. A store that reads over the network (Redis) asks for
just that: a page view's decision fetches no purchase history.

Segments are followed to their conditions, so an aggregate inside a segment counts where
the segment is used. Each history keeps the ruleset's field list (the layout its events
are stored in), so a narrower read decodes the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from nba.dsl import nodes as n
from nba.dsl.checker import CheckedRuleset, walk


@dataclass(frozen=True, slots=True)
class HistoryNeed:
    """One event type's history the ruleset's aggregates read."""

    fields: tuple[str, ...]  # top-level event fields kept per past event, sorted
    window: float  # seconds: the longest `within` over this type (what a decision reads)
    late_s: float = 0.0  # seconds kept beyond the window, for events that arrive late

    @property
    def keep(self) -> float:
        """How far back from a written event's time its type's history is kept: the window
        and the slack for late events (a decision reads only its window, ``(t - window, ...``)."""
        return self.window + self.late_s


@dataclass(frozen=True, slots=True)
class StateNeeds:
    """Everything a compiled ruleset needs from a customer's state."""

    history: dict[str, HistoryNeed]  # event type -> need
    contact_window: float  # seconds: the longest cap or policy duration (0: none): what a decision reads
    profile_schema: dict[str, str]  # field -> "string" | "number" | "bool" | "time" | "list"
    # How far back from the newest contact older contacts are kept (the ruleset's, in a
    # narrower read too): twice the longest window and the slack for late events, since a
    # cap counts ``(t - D, t + D)`` and a decision for an event up to that much older than
    # the newest must still see every contact it counts. Negative: twice ``contact_window``.
    contact_keep: float = -1.0

    def __post_init__(self):
        if self.contact_keep < 0:
            object.__setattr__(self, "contact_keep", 2 * self.contact_window)

    @property
    def retention(self) -> float:
        """The longest span of time any part of the state must be kept."""
        longest = max((need.keep for need in self.history.values()), default=0.0)
        return max(longest, self.contact_keep)


def aggregates_in(expressions: Iterable[n.Expr | None], segments: dict[str, n.Segment]) -> list[n.Aggregate]:
    """Every aggregate the expressions evaluate, through the segments they use."""
    found: list[n.Aggregate] = []
    seen_segments: set[str] = set()
    pending = [expr for expr in expressions if expr is not None]
    while pending:
        for node in walk(pending.pop()):
            if isinstance(node, n.Aggregate):
                found.append(node)
            elif isinstance(node, n.SegmentRef) and node.name not in seen_segments:
                seen_segments.add(node.name)
                segment = segments.get(node.name)
                if segment is not None:
                    pending.append(segment.condition)
    return found


def rule_expressions(rule: n.Rule) -> list[n.Expr | None]:
    params = [value for _name, value, _pos in rule.then.params] if rule.then else []
    return [rule.when, rule.priority, *params]


def read_needs(
    checked: CheckedRuleset,
    buckets: dict[str | None, list[int]],
    needs: StateNeeds,
    late_events_s: float,
) -> dict[str | None, StateNeeds]:
    """Event type -> what its decision reads; the ``None`` entry is for every other type.

    ``buckets`` is the compiler's plan (event type -> indexes of the rules it tests);
    ``needs`` the ruleset's, which every entry narrows.
    """
    updates: dict[str, list[n.Expr | None]] = {}
    for update in checked.on_updates:
        exprs = updates.setdefault(update.event_type, [])
        exprs.append(update.condition)
        exprs.extend(item.value for item in update.sets)
    default = [value for _name, value, _pos in checked.default.then.params] if checked.default else []
    policies = checked.policies

    def narrowed(rule_indexes: list[int], event_type: str | None) -> StateNeeds:
        rules = [checked.rules[index] for index in rule_indexes]
        expressions = [expr for rule in rules for expr in rule_expressions(rule)]
        expressions += updates.get(event_type, []) if event_type is not None else []
        expressions += default
        windows: dict[str, float] = {}
        for aggregate in aggregates_in(expressions, checked.segments):
            windows[aggregate.event_type] = max(windows.get(aggregate.event_type, 0.0), float(aggregate.window))
        history = {
            kind: HistoryNeed(need.fields, windows[kind], late_events_s)
            for kind, need in needs.history.items()
            if kind in windows
        }
        contact_window = 0.0
        for rule in rules:
            if rule.cap is not None:
                contact_window = max(contact_window, float(rule.cap.window))
            channel = rule.then.channel if rule.then else None
            for policy in policies:
                if policy.channel is None or policy.channel == channel:
                    contact_window = max(contact_window, float(policy.window))
        return StateNeeds(
            history=history,
            contact_window=contact_window,
            profile_schema=needs.profile_schema,
            contact_keep=needs.contact_keep,
        )

    out = {event_type: narrowed(indexes, event_type) for event_type, indexes in buckets.items()}
    # a type with `on` updates but no bucket of its own is decided by the bucket for any type
    for event_type in updates:
        if event_type not in out:
            out[event_type] = narrowed(buckets.get(None, []), event_type)
    # equal needs as one object, so that a store prepares each distinct read once
    distinct: dict[tuple, StateNeeds] = {}
    for event_type, need in out.items():
        key = (tuple(sorted(need.history.items())), need.contact_window, need.contact_keep)
        out[event_type] = distinct.setdefault(key, need)
    return out
