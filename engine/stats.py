"""Counters of what an engine decided, for `stats`, replay summaries and metrics."""

from __future__ import annotations

from operator import itemgetter


class EngineStats:
    def __init__(self) -> None:
        self.decisions = 0
        self.degraded = 0
        self.rule_errors = 0
        self.bad_events = 0
        self.nothing_chosen = 0
        self.store_read_failures = 0  # reads that failed or came too late: the decision was degraded
        self.store_commit_failures = 0  # commits that failed: the decision was made again, degraded
        self.store_counters = None  # the store's own counters (RedisStore.counters), if it has any
        # Plain dicts, not Counters: `counts[key] = counts.get(key, 0) + 1` on a dict costs
        # less than half of `counter[key] += 1`, and this runs for every decision.
        self.first_choices: dict[str, int] = {}
        self.passed_over: dict[str, int] = {}
        self.errors_by_rule: dict[str, int] = {}

    def record(self, first_rule: str | None, passed_over, errors, degraded: bool) -> None:
        self.decisions += 1
        if degraded:
            self.degraded += 1
        if first_rule is None:
            self.nothing_chosen += 1
        else:
            first_choices = self.first_choices
            first_choices[first_rule] = first_choices.get(first_rule, 0) + 1
        if passed_over or errors:
            self.record_reasons(passed_over, errors)

    def record_reasons(self, passed_over, errors) -> None:
        counts = self.passed_over
        for _rule, reason in passed_over:
            counts[reason] = counts.get(reason, 0) + 1
        counts = self.errors_by_rule
        for rule, _message in errors:
            self.rule_errors += 1
            counts[rule] = counts.get(rule, 0) + 1

    def record_bad_event(self) -> None:
        self.bad_events += 1

    def snapshot(self) -> dict:
        return {
            "decisions": self.decisions,
            "errors": self.bad_events,
            "rule_errors": self.rule_errors,
            "degraded": self.degraded,
            "store_failures": {"read": self.store_read_failures, "commit": self.store_commit_failures},
            "store_counters": self.store_counters() if self.store_counters is not None else {},
            "nothing_chosen": self.nothing_chosen,
            "first_choices": _most_common(self.first_choices),
            "passed_over": _most_common(self.passed_over),
            "errors_by_rule": _most_common(self.errors_by_rule),
        }


def _most_common(counts: dict[str, int]) -> dict[str, int]:
    """The counts, highest first, ties in the order first seen (as ``Counter.most_common``)."""
    return dict(sorted(counts.items(), key=itemgetter(1), reverse=True))
