"""Loading a ruleset in a child process (dsl/isolated.py): the same ruleset as an
in-process load, the same errors, and an event loop that keeps running meanwhile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from nba.dsl import LoadError, load_ruleset
from nba.dsl.isolated import _HEADER, _answer
from nba.dsl.loader import RulesetLoadFailed, load_ruleset_async, load_ruleset_in_subprocess
from nba.engine import Engine
from nba.engine.store.memory import MemoryStore

from dsl_helpers import T0, event

RULES = Path(__file__).resolve().parent.parent / "rules"
EVENTS = [event("page_view", category="watches", price=250, time=T0 + i) for i in range(3)] + [
    event("cart_abandoned", cart_value=80.0, items=2, time=T0 + 10),
    event("purchase", amount=120, time=T0 + 20),
    event("app_open", time=1_795_000_000),  # Black Friday 2026
]


def decisions(ruleset) -> list:
    engine = Engine(ruleset, MemoryStore())
    engine.put_profile("c1", {"tier": "gold", "lifetime_value": 5000, "email_ok": True, "push_ok": True})
    out = []
    for item in EVENTS:
        decision = engine.decide(dict(item), explain=True)
        out.append(
            (
                decision.action,
                decision.params,
                [(e.rule, e.outcome, e.error, e.conditions, e.values) for e in decision.trace or ()],
            )
        )
    return out


def test_the_same_ruleset_as_an_in_process_load():
    expected = load_ruleset(RULES)
    for ruleset in (load_ruleset_in_subprocess(RULES), asyncio.run(load_ruleset_async(RULES))):
        assert ruleset.paths == expected.paths
        assert [rule.id for rule in ruleset.rules] == [rule.id for rule in expected.rules]
        assert ruleset.python_source == expected.python_source
        assert ruleset.needs == expected.needs and ruleset.read_needs == expected.read_needs
        assert sorted(ruleset.buckets, key=str) == sorted(expected.buckets, key=str)
        assert decisions(ruleset) == decisions(expected)


def test_the_same_errors_as_an_in_process_load(tmp_path):
    (tmp_path / "a.rules").write_text("rule r\n  when vipp\n  then a\nend\n")
    (tmp_path / "b.rules").write_text("rule s when event.x > 1" + "0" * 400 + " then b end\n")
    os.mkfifo(tmp_path / "p.rules")
    with pytest.raises(LoadError) as in_process:
        load_ruleset(tmp_path)
    with pytest.raises(LoadError) as in_child:
        load_ruleset_in_subprocess(tmp_path)
    with pytest.raises(LoadError) as awaited:
        asyncio.run(load_ruleset_async(tmp_path))
    assert in_child.value.report() == in_process.value.report() == awaited.value.report()
    assert len(in_child.value.diagnostics) == 3
    with pytest.raises(LoadError, match="no such file or directory"):
        load_ruleset_in_subprocess(tmp_path / "missing")


def test_the_event_loop_runs_while_the_child_loads():
    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ruleset = await load_ruleset_async(RULES)
        during = ticks
        done = True
        await task
        return ruleset, during

    ruleset, ticks = asyncio.run(main())
    assert len(ruleset.rules) > 0
    assert ticks > 5  # a child process takes far longer than a few ticks to start and load


def test_a_child_that_fails_or_takes_too_long():
    with pytest.raises(RulesetLoadFailed, match="more than"):
        load_ruleset_in_subprocess(RULES, timeout=0.001)
    with pytest.raises(RulesetLoadFailed, match="more than"):
        asyncio.run(load_ruleset_async(RULES, timeout=0.001))
    with pytest.raises(RulesetLoadFailed, match="failed: boom"):
        _answer(b"", b"Traceback ...\nboom\n", 1)
    with pytest.raises(RulesetLoadFailed, match="incomplete"):
        _answer(_HEADER.pack(100) + b"x", b"", 0)
