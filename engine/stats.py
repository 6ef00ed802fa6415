"""Counters of what an engine decided, for `stats`, replay summaries and metrics."""

from __future__ import annotations

from collections import Counter


class EngineStats:
    def __init__(self) -> None:
        self.decisions = 0
        self.degraded = 0
        self.rule_errors = 0
        self.bad_events = 0
        self.nothing_chosen = 0
        self.first_choices: Counter[str] = Counter()
        self.passed_over: Counter[str] = Counter()
        self.errors_by_rule: Counter[str] = Counter()

    def record(self, first_rule: str | None, passed_over, errors, degraded: bool) -> None:
        self.decisions += 1
        if degraded:
            self.degraded += 1
        if first_rule is None:
            self.nothing_chosen += 1
        else:
            self.first_choices[first_rule] += 1
        if passed_over or errors:
            self.record_reasons(passed_over, errors)

    def record_reasons(self, passed_over, errors) -> None:
        for _rule, reason in passed_over:
            self.passed_over[reason] += 1
        for rule, _message in errors:
            self.rule_errors += 1
            self.errors_by_rule[rule] += 1

    def record_bad_event(self) -> None:
        self.bad_events += 1

    def snapshot(self) -> dict:
        return {
            "decisions": self.decisions,
            "errors": self.bad_events,
            "rule_errors": self.rule_errors,
            "degraded": self.degraded,
            "nothing_chosen": self.nothing_chosen,
            "first_choices": dict(self.first_choices.most_common()),
            "passed_over": dict(self.passed_over.most_common()),
            "errors_by_rule": dict(self.errors_by_rule.most_common()),
        }
