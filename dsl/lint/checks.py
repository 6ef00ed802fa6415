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
from dataclasses import dataclass, replace

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
    true_keys: list[frozenset]  # the subjects of each conjunction of ``true`` (``may_imply``)


@dataclass(slots=True)
class _RuleResults:
    """What lint found out about one rule on its own (all but its ``shadowed`` and ``expired``)."""

    rule: n.Rule  # held, so that its id is not reused while this entry lives
    fact: _RuleFacts
    warnings: list[LintWarning]  # never-matches, redundant-condition
    segments_used: set[str]  # by its when, priority and parameters
    always_wins: bool


class LintMemo:
    """Lint's results kept from one lint of a ruleset to the next (the language server lints
    at every keystroke; benchmarks/bench_lsp.py).

    While the ruleset's segments and policies are the very same nodes as at the last lint,
    a rule that is also the same node (its text did not change) has the same results on its
    own, and the same answer to "does it match only where that rule matches" for another
    such rule: both are reused, and only new and changed rules are judged again. Anything
    else changed, and everything is judged again. Entries hold their rule nodes, so that no
    id is reused while they live; only those of the last lint are kept. The warnings are
    the same as without a memo (the tests compare them).
    """

    def __init__(self) -> None:
        self.context: list[n.Node] = []  # the segments and policies, held
        self.rules: dict[int, _RuleResults] = {}
        self.implied: dict[tuple[int, int], tuple[n.Rule, n.Rule, bool]] = {}

    def start(self, checked: CheckedRuleset) -> None:
        context = [*checked.segments.values(), *checked.policies]
        if len(context) != len(self.context) or any(a is not b for a, b in zip(context, self.context)):
            self.rules, self.implied = {}, {}
        self.context = context


def lint_checked(
    checked: CheckedRuleset, sources: dict[str, str], at: float, memo: LintMemo | None = None
) -> list[LintWarning]:
    """Every warning of a ruleset that loads, in path, line and column order. ``memo``: the
    results of the last lint of this ruleset, reused where they still hold, and updated."""
    return _Linter(checked, sources, at, memo).run()


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
    def __init__(self, checked: CheckedRuleset, sources: dict[str, str], at: float, memo: LintMemo | None = None):
        self.checked = checked
        self.sources = sources
        self.at = at
        self.conditions = Conditions(checked.segments)
        self.warnings: list[LintWarning] = []
        self.memo = memo
        self.implied: dict[tuple[int, int], tuple[n.Rule, n.Rule, bool]] = {}  # this lint's, for the memo

    def run(self) -> list[LintWarning]:
        memo = self.memo
        if memo is not None:
            memo.start(self.checked)
        known = memo.rules if memo is not None else {}
        results: dict[int, _RuleResults] = {}
        for index, rule in enumerate(self.checked.rules):
            entry = known.get(id(rule))
            if entry is None or entry.rule is not rule:
                entry = self.rule_results(index, rule)
            elif entry.fact.index != index:
                entry.fact = replace(entry.fact, index=index)
            results[id(rule)] = entry
            self.warnings.extend(entry.warnings)
        self.shadowed(results)
        self.unused_segments(results)
        self.expired()
        if memo is not None:
            memo.rules, memo.implied = results, self.implied
        return sorted(self.warnings, key=LintWarning.sort_key)

    def rule_results(self, index: int, rule: n.Rule) -> _RuleResults:
        """What lint says about ``rule`` on its own."""
        fact = self.rule_facts(index, rule)
        before = len(self.warnings)
        if rule.when is not None:
            if not fact.true:
                self.never_matches(fact)
            else:
                self.redundant_conditions(fact)
        warnings = self.warnings[before:]
        del self.warnings[before:]
        used: set[str] = set()
        for expr in (rule.when, rule.priority, *_param_values(rule.then)):
            _note_segments(expr, used)
        return _RuleResults(rule, fact, warnings, used, bool(fact.true) and self.always_wins(fact))

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
            index,
            rule,
            operands,
            raw,
            operand_true,
            true,
            constant_number(rule.priority),
            event_types_of(rule.when),
            keysets(true),
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

    def shadowed(self, results: dict[int, _RuleResults]) -> None:
        facts = [entry.fact for entry in results.values()]
        winners = [entry.fact for entry in results.values() if entry.always_wins]
        winners.sort(key=lambda f: (-f.priority, f.index))  # the order they rank in
        # The winners that can match whenever a rule of an event type does: those of any
        # type and those of that type, in the order they rank in. (Testing every winner
        # against every rule took most of lint's time for rules spread over event types:
        # 500,000 pairs at 1,000 rules, benchmarks/bench_lint.py.)
        untyped = [w for w in winners if w.types is None]
        of_type: dict[str, list[_RuleFacts]] = {}
        for winner in winners:
            for event_type in winner.types or ():
                of_type.setdefault(event_type, []).append(winner)
        if untyped:
            for event_type, typed in of_type.items():
                of_type[event_type] = sorted(typed + untyped, key=lambda f: (-f.priority, f.index))
        for fact in facts:
            if not fact.true or fact.priority is None:
                continue
            if fact.types is None:
                candidates = untyped
            elif not fact.types:
                candidates = winners
            else:  # a winner must match each of the rule's types: any one of them selects
                candidates = min((of_type.get(t, untyped) for t in fact.types), key=len)
            for winner in candidates:
                if (winner.priority, -winner.index) <= (fact.priority, -fact.index):
                    break  # from here on, none ranks above the rule
                if winner.types is not None and (fact.types is None or not fact.types <= winner.types):
                    continue
                if self.matches_only_where(fact, winner):
                    self.warn(fact.rule.pos, "shadowed", self.shadow_message(fact, winner))
                    break

    def matches_only_where(self, fact: _RuleFacts, winner: _RuleFacts) -> bool:
        """Wherever ``fact``'s rule matches, ``winner``'s does (remembered by the memo)."""
        if self.memo is None:
            return may_imply(fact.true_keys, winner.true_keys) and implies(fact.true, winner.true)
        key = (id(fact.rule), id(winner.rule))
        known = self.memo.implied.get(key)
        if known is not None and known[0] is fact.rule and known[1] is winner.rule:
            found = known[2]
        else:
            found = may_imply(fact.true_keys, winner.true_keys) and implies(fact.true, winner.true)
        self.implied[key] = (fact.rule, winner.rule, found)
        return found

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

    def unused_segments(self, results: dict[int, _RuleResults]) -> None:
        used: set[str] = set()
        checked = self.checked
        for entry in results.values():
            used |= entry.segments_used
        for name, segment in checked.segments.items():
            for node in walk(segment.condition):
                if isinstance(node, n.SegmentRef) and node.name != name:
                    used.add(node.name)
        for update in checked.on_updates:
            _note_segments(update.condition, used)
            for item in update.sets:
                _note_segments(item.value, used)
        if checked.default is not None:
            for expr in _param_values(checked.default.then):
                _note_segments(expr, used)
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


def _note_segments(expr: n.Expr | None, used: set[str]) -> None:
    """Adds the names of the segments ``expr`` uses to ``used``."""
    for node in walk(expr):
        if isinstance(node, n.SegmentRef):
            used.add(node.name)


def _param_values(spec: n.ActionSpec | None) -> list[n.Expr]:
    return [expr for _name, expr, _pos in spec.params] if spec is not None else []


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
