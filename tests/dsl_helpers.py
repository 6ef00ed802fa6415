"""Shared helpers for the rule-language tests (tests/test_dsl_*.py).

Rules are loaded from text with ``dsl.load_text`` and run on an in-memory engine;
expressions are evaluated through a rule's `with` parameter so that every test goes
through the parser, the checker, the folder and the generated code, as rules do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nba.dsl import LoadError, load_ruleset, load_text
from nba.engine import Engine
from nba.engine.store.memory import MemoryStore

RULEFILES = Path(__file__).parent / "rulefiles"
T0 = 1_790_000_000  # 2026-09-21T14:13:20Z: a fixed decision time, so no test depends on the clock


def engine_for(text: str, name: str = "test.rules") -> Engine:
    """An engine on a fresh in-memory store for the ruleset ``text``, on the events' own
    times (as `nba test` runs: any time, the far future included)."""
    return Engine(load_text(text, name), MemoryStore(), max_event_ahead_s=None)


def engine_at(path: Path | str) -> Engine:
    return Engine(load_ruleset(path), MemoryStore(), max_event_ahead_s=None)


def event(type: str = "ping", customer_id: str = "c1", time: float = T0, **fields) -> dict:
    return {"customer_id": customer_id, "type": type, "time": time, **fields}


def evaluate(expr: str, *, declarations: str = "", profile: dict | None = None, fields: dict | None = None, **more):
    """The value of ``expr`` for one `ping` event (its fields: ``fields`` and keywords).

    Raises ``EvalFailed`` with the trace's message when the expression fails at decision time.
    """
    engine = engine_for(f"{declarations}\nrule probe\n  when true\n  then probe with v = ({expr})\nend\n")
    if profile is not None:
        engine.put_profile("c1", profile)
    decision = engine.decide(event(**(fields or {}), **more), explain=True, dry_run=True)
    if decision.action == "probe":
        return decision.params["v"]
    raise EvalFailed(trace_error(decision, "probe"))


def holds(condition: str, *, declarations: str = "", profile: dict | None = None, **fields) -> bool:
    """Whether a rule with ``when CONDITION`` matches one `ping` event; errors raise EvalFailed."""
    engine = engine_for(f"{declarations}\nrule probe\n  when {condition}\n  then probe\nend\n")
    if profile is not None:
        engine.put_profile("c1", profile)
    decision = engine.decide(event(**fields), explain=True, dry_run=True)
    if decision.action == "probe":
        return True
    error = trace_error(decision, "probe")
    if error is not None:
        raise EvalFailed(error)
    return False


class EvalFailed(Exception):
    """A decision-time error of the probed rule (its message is the trace's)."""


def trace_entry(decision, rule_id: str):
    for entry in decision.trace or ():
        if entry.rule == rule_id:
            return entry
    return None


def trace_error(decision, rule_id: str) -> str | None:
    entry = trace_entry(decision, rule_id)
    return entry.error if entry is not None else None


def load_errors(text: str, name: str = "test.rules") -> list:
    """The diagnostics of a ruleset that must not load."""
    with pytest.raises(LoadError) as info:
        load_text(text, name)
    return info.value.diagnostics


def only_error(text: str, name: str = "test.rules"):
    diagnostics = load_errors(text, name)
    assert len(diagnostics) == 1, [f"{d.pos}: {d.message}" for d in diagnostics]
    return diagnostics[0]


def actions(decision) -> list[str]:
    return [choice.action for choice in decision.choices]
