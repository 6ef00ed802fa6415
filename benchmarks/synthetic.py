"""A seeded synthetic workload for the evaluation benchmark.

A workload is N rules, a set of profiles and a stream of events. Each rule is an event
type plus two or three comparisons on event and profile fields (numeric thresholds,
string equality, ``in`` lists), an action and a priority. The selectivity of each
comparison is chosen so that about 20% of events match at least one rule; the generator
measures the rate and nudges its target until it is close.

The rules are kept as plain data (``Rule`` / ``Condition``) so that every peer adapter can
translate them into its own language; ``render_rules`` writes them in nba's rule language
(DSL.md). ``expected_action`` is the decision all contenders are checked against: the
action of the highest-priority matching rule, ties going to declaration order, or None
(the first choice nba makes with no caps, holdouts, policies or default).

Every number in the workload is a whole number, so that no contender trips on int/float
kinds (CEL, for one, keeps them apart), and every event and profile carries every field,
so that no contender's notion of a missing field matters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BASE_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
TARGET_MATCH_RATE = 0.20
RULES_PER_TYPE = 20
MAX_EVENT_TYPES = 500

# name -> (low, high), both inclusive, uniform whole numbers
EVENT_NUMBERS = {"amount": (0, 999), "items": (1, 20), "duration": (0, 599)}
PROFILE_NUMBERS = {"lifetime_value": (0, 4999), "age": (18, 80), "visits": (0, 199)}
# name -> the values it takes, uniformly
EVENT_STRINGS = {
    "category": (
        "shoes",
        "shirts",
        "bags",
        "hats",
        "coats",
        "socks",
        "belts",
        "watches",
        "toys",
        "books",
        "games",
        "music",
    ),
    "channel": ("web", "app", "email", "store", "call"),
    "device": ("ios", "android", "desktop", "tablet"),
}
PROFILE_STRINGS = {
    "tier": ("none", "bronze", "silver", "gold", "platinum"),
    "region": ("north", "south", "east", "west", "central", "coast", "hills", "lakes", "islands", "plains"),
    "language": ("en", "fr", "de", "es", "it", "nl"),
}
NUMBER_OPERATORS = (">", ">=", "<", "<=")


@dataclass(frozen=True)
class Condition:
    """``SCOPE.FIELD OP VALUE``; ``op`` is one of ``== > >= < <= in``."""

    scope: str  # "event" or "profile"
    field: str
    op: str
    value: Any  # a whole number, a string, or a tuple of strings for "in"

    def holds(self, event: dict, profile: dict) -> bool:
        actual = (event if self.scope == "event" else profile)[self.field]
        op, value = self.op, self.value
        if op == "==":
            return actual == value
        if op == "in":
            return actual in value
        if op == ">":
            return actual > value
        if op == ">=":
            return actual >= value
        if op == "<":
            return actual < value
        if op == "<=":
            return actual <= value
        raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class Rule:
    id: str
    index: int  # declaration order
    event_type: str
    conditions: tuple[Condition, ...]
    action: str
    priority: int

    def matches(self, event: dict, profile: dict) -> bool:
        return event["type"] == self.event_type and all(c.holds(event, profile) for c in self.conditions)


@dataclass
class Workload:
    seed: int
    rules: list[Rule]
    event_types: list[str]
    profiles: dict[str, dict]  # customer id -> profile
    events: list[dict]
    ranked: list[Rule] = field(init=False)  # by priority, highest first; ties by declaration order

    def __post_init__(self) -> None:
        self.ranked = sorted(self.rules, key=lambda r: (-r.priority, r.index))

    def ranked_by_type(self) -> dict[str, list[Rule]]:
        """The ranked rules of each event type (every type present, maybe empty)."""
        out: dict[str, list[Rule]] = {t: [] for t in self.event_types}
        for rule in self.ranked:
            out[rule.event_type].append(rule)
        return out

    def pairs(self) -> list[tuple[dict, dict]]:
        """Each event with its customer's profile, in event order."""
        return [(e, self.profiles[e["customer_id"]]) for e in self.events]

    def match_rate(self) -> float:
        decided = sum(1 for action in expected_actions(self) if action is not None)
        return decided / len(self.events) if self.events else 0.0


def expected_action(workload: Workload, event: dict, profile: dict) -> str | None:
    """The decision: the action of the best-ranked matching rule, or None. Slow and plain."""
    for rule in workload.ranked:
        if rule.matches(event, profile):
            return rule.action
    return None


def expected_actions(workload: Workload) -> list[str | None]:
    """expected_action for every event of the workload, in order (the same, faster)."""
    by_type = workload.ranked_by_type()
    out = []
    for event, profile in workload.pairs():
        out.append(next((r.action for r in by_type.get(event["type"], ()) if r.matches(event, profile)), None))
    return out


def event_type_count(n_rules: int) -> int:
    """About one event type per RULES_PER_TYPE rules, at least 2 and at most MAX_EVENT_TYPES."""
    return max(2, min(n_rules // RULES_PER_TYPE, MAX_EVENT_TYPES))


def generate(n_rules: int, n_events: int = 5000, seed: int = 1, n_customers: int = 1000) -> Workload:
    """A workload whose match rate is close to TARGET_MATCH_RATE (same seed, same workload)."""
    target = TARGET_MATCH_RATE
    best: Workload | None = None
    best_gap = 2.0
    for _ in range(8):
        workload = _generate(n_rules, n_events, seed, n_customers, target)
        rate = workload.match_rate()
        gap = abs(rate - TARGET_MATCH_RATE)
        if gap < best_gap:
            best, best_gap = workload, gap
        if gap <= 0.02 or rate == 0.0:
            break
        # Comparisons share fields, so rules overlap and the naive target is off: scale it.
        target = min(0.95, max(0.01, target * TARGET_MATCH_RATE / rate))
    assert best is not None
    return best


def _generate(n_rules: int, n_events: int, seed: int, n_customers: int, target: float) -> Workload:
    rng = random.Random(seed)
    types = [f"t{i}" for i in range(event_type_count(n_rules))]
    rules_per_type = n_rules / len(types)
    # P(no rule of the type matches) = (1 - s)^k = 1 - target
    rule_selectivity = 1.0 - (1.0 - target) ** (1.0 / rules_per_type)
    rules = []
    for i in range(n_rules):
        n_conditions = rng.choice((2, 3))
        per_condition = rule_selectivity ** (1.0 / n_conditions)
        rules.append(
            Rule(
                id=f"r{i}",
                index=i,
                event_type=types[i % len(types)],
                conditions=tuple(_conditions(rng, n_conditions, per_condition)),
                action=f"a{i}",
                priority=rng.randrange(100),
            )
        )
    profile_rng = random.Random(seed * 7919 + 1)
    profiles = {f"c{i}": _random_profile(profile_rng) for i in range(n_customers)}
    event_rng = random.Random(seed * 7919 + 2)
    customers = list(profiles)
    events = [
        _random_event(event_rng, i, event_rng.choice(types), event_rng.choice(customers)) for i in range(n_events)
    ]
    return Workload(seed=seed, rules=rules, event_types=types, profiles=profiles, events=events)


def _conditions(rng: random.Random, count: int, selectivity: float) -> list[Condition]:
    fields = (
        [("event", f) for f in EVENT_NUMBERS]
        + [("event", f) for f in EVENT_STRINGS]
        + [("profile", f) for f in PROFILE_NUMBERS]
        + [("profile", f) for f in PROFILE_STRINGS]
    )
    return [_condition(rng, scope, name, selectivity) for scope, name in rng.sample(fields, count)]


def _condition(rng: random.Random, scope: str, name: str, selectivity: float) -> Condition:
    numbers = EVENT_NUMBERS if scope == "event" else PROFILE_NUMBERS
    if name in numbers:
        low, high = numbers[name]
        size = high - low + 1
        selected = min(size, max(1, round(selectivity * size)))
        op = rng.choice(NUMBER_OPERATORS)
        threshold = {">": high - selected, ">=": high - selected + 1, "<": low + selected, "<=": low + selected - 1}[op]
        return Condition(scope, name, op, threshold)
    values = (EVENT_STRINGS if scope == "event" else PROFILE_STRINGS)[name]
    selected = min(len(values) - 1, max(1, round(selectivity * len(values))))
    chosen = rng.sample(values, selected)
    if selected == 1:
        return Condition(scope, name, "==", chosen[0])
    return Condition(scope, name, "in", tuple(chosen))


def _random_profile(rng: random.Random) -> dict:
    profile: dict[str, Any] = {name: rng.randint(lo, hi) for name, (lo, hi) in PROFILE_NUMBERS.items()}
    profile.update({name: rng.choice(values) for name, values in PROFILE_STRINGS.items()})
    return profile


def _random_event(rng: random.Random, index: int, event_type: str, customer_id: str) -> dict:
    event: dict[str, Any] = {"customer_id": customer_id, "type": event_type, "time": BASE_TIME + index}
    event.update({name: rng.randint(lo, hi) for name, (lo, hi) in EVENT_NUMBERS.items()})
    event.update({name: rng.choice(values) for name, values in EVENT_STRINGS.items()})
    return event


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """A value as written in nba rules (the same spelling works in zen, rule-engine and CEL)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return str(value)


def condition_text(condition: Condition) -> str:
    return f"{condition.scope}.{condition.field} {condition.op} {literal(condition.value)}"


def render_rule(rule: Rule) -> str:
    parts = [f"event.type == {literal(rule.event_type)}"] + [condition_text(c) for c in rule.conditions]
    return (
        f"rule {rule.id} priority {rule.priority}\n  when " + "\n   and ".join(parts) + f"\n  then {rule.action}\nend\n"
    )


def render_rules(workload: Workload) -> str:
    """The ruleset in nba's rule language, in declaration order."""
    header = f"# synthetic ruleset: {len(workload.rules)} rules, seed {workload.seed}\n\n"
    return header + "\n".join(render_rule(r) for r in workload.rules)
