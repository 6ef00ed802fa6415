"""The lint codes (never-matches, shadowed, redundant-condition, unused-segment, expired)
over a checked ruleset. Every warning must be true: where the linter cannot be sure, it
says nothing.

Why a hand-written interval/implication checker and not an SMT solver (z3-solver): the
conditions lint has to judge are comparisons of one value with constants (numbers with
open or closed ends, strings, booleans, ``in`` lists, ``event.type``) joined by
``and``/``or``/``not`` through segments, under DSL.md's three-way semantics (true,
false-or-null, decision-time error). Per-subject sets of values (``domains.py``) decide
exactly those, with no encoding of null, kinds and errors into a solver's theories and no
native dependency of ~40 MB. What an SMT solver would add is relations between two values
(``event.a > profile.b``) and arithmetic (``event.a + 1 > 5``); the linter treats those as
values it does not know and stays silent about them. Cost decides it too: ``shadowed``
asks one implication per pair of rules that can meet (up to ~500,000 for 1,000 rules),
which a solver at a millisecond a query cannot do in the 5 s budget; here a cheap subject
test discards most pairs and the rest take microseconds (benchmarks/bench_lint.py).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from nba.dsl import nodes as n
from nba.dsl.checker import CheckedRuleset, and_operands, event_types_of, walk
from nba.dsl.folding import fold
from nba.dsl.lint.conditions import ALWAYS, DNF, Conditions, TooComplex, dnf_and
from nba.dsl.lint.implication import implies, keysets, may_imply
from nba.dsl.lint.source_text import find_keyword, show, start_of
from nba.dsl.source import Position

CODES = ("never-matches", "shadowed", "redundant-condition", "unused-segment", "expired")


@dataclass(frozen=True, slots=True)
class LintWarning:
    pos: Position
    code: str
    message: str

    def sort_key(self):
        return (self.pos.path, self.pos.line, self.pos.column, self.code)


@dataclass
class _RuleFacts:
    index: int
    rule: n.Rule
    operands: list[n.Expr]  # the top-level `and` operands, folded
    raw_operands: list[n.Expr]  # the same, as written (for places and messages)
    operand_true: list[DNF]
    true: DNF
    priority: float | None  # None: not a constant
    types: frozenset[str] | None


def lint_checked(checked: CheckedRuleset, sources: dict[str, str], at: float) -> list[LintWarning]:
    """Every warning of a ruleset that loads, in path, line and column order."""
    return _Linter(checked, sources, at).run()


def constant_number(expr: n.Expr | None):
    """The value of a priority known when the rules load, or None."""
    if expr is None:
        return 0
    folded = fold(expr)
    if isinstance(folded, n.Literal) and folded.value.__class__ in (int, float) and folded.value == folded.value:
        return folded.value
    return None


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC, to the second (epoch seconds past what a calendar date can hold)."""
    try:
        return _dt.datetime.fromtimestamp(int(seconds), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{seconds} (epoch seconds)"


class _Linter:
    def __init__(self, checked: CheckedRuleset, sources: dict[str, str], at: float):
        self.checked = checked
        self.sources = sources
        self.at = at
        self.conditions = Conditions(checked.segments)
        self.warnings: list[LintWarning] = []

    def run(self) -> list[LintWarning]:
        facts = [self.rule_facts(index, rule) for index, rule in enumerate(self.checked.rules)]
        for fact in facts:
            if fact.rule.when is None:
                continue
            if not fact.true:
                self.never_matches(fact)
            else:
                self.redundant_conditions(fact)
        self.shadowed(facts)
        self.unused_segments()
        self.expired()
        return sorted(self.warnings, key=LintWarning.sort_key)

    def warn(self, pos: Position, code: str, message: str) -> None:
        self.warnings.append(LintWarning(pos, code, message))

    def rule_facts(self, index: int, rule: n.Rule) -> _RuleFacts:
        raw = and_operands(rule.when) if rule.when is not None else []
        operands = [fold(op) for op in raw]
        operand_true = [self.conditions.of(op, folded=True)[0] for op in operands]
        try:
            true = ALWAYS
            for part in operand_true:
                true = dnf_and(true, part)
        except TooComplex:
            true = self.conditions.opaque(rule.when)[0]
        return _RuleFacts(
            index, rule, operands, raw, operand_true, true, constant_number(rule.priority), event_types_of(rule.when)
        )

    # -- never-matches --

    def never_matches(self, fact: _RuleFacts) -> None:
        rule = fact.rule
        pos = find_keyword(self.sources.get(rule.pos.path), rule.pos, "when") or start_of(rule.when)
        culprits = self.unsatisfiable_core(fact)
        if len(fact.raw_operands) == 1:
            why = "its condition is never true"
        elif len(culprits) == 1:
            why = f"{show(culprits[0])} is never true"
        else:
            why = " and ".join(show(op) for op in culprits) + " are never true together"
        self.warn(pos, "never-matches", f"rule `{rule.id}` can never match: {why}")

    def unsatisfiable_core(self, fact: _RuleFacts) -> list[n.Expr]:
        """A small set of operands that cannot all be true (for the message)."""
        keep = list(range(len(fact.operands)))
        for i in list(keep):
            trial = [j for j in keep if j != i]
            try:
                together = ALWAYS
                for j in trial:
                    together = dnf_and(together, fact.operand_true[j])
            except TooComplex:
                continue
            if not together:
                keep = trial
        return [fact.raw_operands[j] for j in keep]

    # -- redundant-condition --

    def redundant_conditions(self, fact: _RuleFacts) -> None:
        if len(fact.operands) < 2:
            return
        kept = list(range(len(fact.operands)))
        # From the last to the first: of two equal operands the later one is reported, and
        # the ones reported are implied by the ones kept, all together.
        for i in reversed(range(len(fact.operands))):
            others = [j for j in kept if j != i]
            try:
                premise = ALWAYS
                for j in others:
                    premise = dnf_and(premise, fact.operand_true[j])
            except TooComplex:
                continue
            if implies(premise, fact.operand_true[i]):
                kept.remove(i)
                op = fact.raw_operands[i]
                self.warn(
                    start_of(op),
                    "redundant-condition",
                    f"{show(op)} is always true when the rule's other conditions are: remove it",
                )

    # -- shadowed --

    def always_wins(self, fact: _RuleFacts) -> bool:
        """Nothing can pass this rule over or make it fail once its `when` is true."""
        rule = fact.rule
        if fact.priority is None or rule.cap is not None or rule.holdout is not None:
            return False
        if rule.active_from is not None or rule.active_to is not None or rule.then is None:
            return False
        channel = rule.then.channel
        if any(p.channel is None or p.channel == channel for p in self.checked.policies):
            return False
        for _name, expr, _pos in rule.then.params:
            value = fold(expr)
            if not (
                isinstance(value, n.Literal) or (isinstance(value, n.Field) and value.root in ("event", "profile"))
            ):
                return False
        return True

    def shadowed(self, facts: list[_RuleFacts]) -> None:
        winners = [f for f in facts if f.true and self.always_wins(f)]
        winners.sort(key=lambda f: (-f.priority, f.index))  # the order they rank in
        winner_keys = {f.index: keysets(f.true) for f in winners}
        for fact in facts:
            if not fact.true or fact.priority is None:
                continue
            fact_keys = keysets(fact.true)
            for winner in winners:
                if (winner.priority, -winner.index) <= (fact.priority, -fact.index):
                    break  # from here on, none ranks above the rule
                if winner.types is not None and (fact.types is None or not fact.types <= winner.types):
                    continue
                if not may_imply(fact_keys, winner_keys[winner.index]):
                    continue
                if implies(fact.true, winner.true):
                    self.warn(fact.rule.pos, "shadowed", self.shadow_message(fact, winner))
                    break

    @staticmethod
    def shadow_message(fact: _RuleFacts, winner: _RuleFacts) -> str:
        if winner.priority == fact.priority:
            rank = f"has the same priority ({_number(winner.priority)}) and comes first"
        else:
            rank = f"has a higher priority ({_number(winner.priority)} > {_number(fact.priority)})"
        return (
            f"rule `{fact.rule.id}` is never the first choice: `{winner.rule.id}` matches "
            f"whenever it does, {rank}, and nothing can pass it over"
        )

    # -- unused-segment --

    def unused_segments(self) -> None:
        used: set[str] = set()
        checked = self.checked

        def note(expr):
            for node in walk(expr):
                if isinstance(node, n.SegmentRef):
                    used.add(node.name)

        def note_spec(spec):
            if spec is not None:
                for _name, expr, _pos in spec.params:
                    note(expr)

        for rule in checked.rules:
            note(rule.when)
            note(rule.priority)
            note_spec(rule.then)
        for name, segment in checked.segments.items():
            for node in walk(segment.condition):
                if isinstance(node, n.SegmentRef) and node.name != name:
                    used.add(node.name)
        for update in checked.on_updates:
            note(update.condition)
            for item in update.sets:
                note(item.value)
        if checked.default is not None:
            note_spec(checked.default.then)
        for name, segment in checked.segments.items():
            if name not in used:
                self.warn(
                    segment.pos,
                    "unused-segment",
                    f"segment `{name}` is not used by any rule, priority, parameter, update, default or other segment",
                )

    # -- expired --

    def expired(self) -> None:
        for rule in self.checked.rules:
            if rule.active_to is None or rule.active_to > self.at:
                continue
            pos = find_keyword(self.sources.get(rule.pos.path), rule.pos, "active") or rule.pos
            self.warn(
                pos,
                "expired",
                f"rule `{rule.id}` was active until {format_time(rule.active_to)}, which is before "
                f"{format_time(self.at)}: it can no longer match; remove it or move its `to`",
            )


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
