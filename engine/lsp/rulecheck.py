"""Checking a ruleset again after a keystroke without checking every rule again.

With parsing done piece by piece (``chunks``), the checker is most of a keystroke's time at
1,000 rules (benchmarks/bench_lsp.py). A rule's check reads the rule and the ruleset's
other declarations (schemas, segments, ...), never another rule. So while every declaration
that is not a rule is the very same node as at the last check (its piece's text did not
change), a rule that is also the same node gives the same findings: they are replayed,
and only new or changed rules are checked. Anything else that changed, and the whole
ruleset is checked again. The checker is ``dsl.checker.Checker``; only its per-rule step is
wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from nba.dsl import nodes as n
from nba.dsl.checker import CheckedRuleset, Checker
from nba.dsl.source import Diagnostic, Diagnostics


@dataclass(slots=True)
class _Checked:
    rule: n.Rule  # held, so that its id is not reused while this entry lives
    findings: list[Diagnostic]
    event_types: frozenset[str] | None
    kinds: dict[int, str]


class RuleChecks:
    """The per-rule results of the last check of one ruleset."""

    def __init__(self) -> None:
        self.context: list[n.Node] = []  # the declarations that are not rules, held
        self.unparsed: tuple[str, ...] = ()
        self.rules: dict[int, _Checked] = {}
        # id(expression) -> kind, kept from check to check: the expressions of a rule that
        # is not checked again are the same objects, so their entries stay true
        self.kinds: dict[int, str] = {}

    def check(self, modules: list[n.Module], diagnostics: Diagnostics, unparsed: tuple[str, ...]) -> CheckedRuleset:
        context = [d for m in modules for d in m.declarations if not isinstance(d, n.Rule)]
        same = (
            unparsed == self.unparsed
            and len(context) == len(self.context)
            and all(a is b for a, b in zip(context, self.context))
        )
        if not same:
            self.rules, self.kinds = {}, {}
        checker = _Checker(diagnostics, unparsed, self.rules, self.kinds)
        checked = checker.check(modules)
        for gone in self.rules.keys() - checker.done.keys():
            for key in self.rules[gone].kinds:
                self.kinds.pop(key, None)
        for entry in checker.fresh:  # rechecked rules' kinds go in after the stale ones went
            self.kinds.update(entry.kinds)
        self.context, self.unparsed, self.rules = context, unparsed, checker.done
        checked.kinds = dict(self.kinds)  # the next check changes self.kinds
        return checked


class _Checker(Checker):
    def __init__(
        self, diagnostics: Diagnostics, unparsed: tuple[str, ...], previous: dict[int, _Checked], kinds: dict[int, str]
    ):
        super().__init__(diagnostics, unparsed)
        self.out.kinds = kinds
        self.previous = previous
        self.done: dict[int, _Checked] = {}
        self.fresh: list[_Checked] = []

    def check_rule(self, rule: n.Rule) -> None:
        entry = self.previous.get(id(rule))
        if entry is None or entry.rule is not rule:
            before = len(self.diag.items)
            kinds, self.out.kinds = self.out.kinds, {}
            try:
                super().check_rule(rule)
            finally:
                kinds, self.out.kinds = self.out.kinds, kinds
            entry = _Checked(rule, self.diag.items[before:], self.out.rule_event_types.get(rule.id), kinds)
            self.fresh.append(entry)
        else:
            self.diag.items.extend(entry.findings)
            self.out.rule_event_types[rule.id] = entry.event_types
        self.done[id(rule)] = entry
