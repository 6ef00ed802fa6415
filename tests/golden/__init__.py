"""Golden replay: a small fixed event file through rules/, and the decisions it must give.

    python -m tests.golden          # rewrite replay_small.expected.jsonl from the engine

The test (tests/test_replay_e2e.py) compares the engine against the committed expected
file line by line; rewrite it only after a change whose new decisions you have read
and agree with (``git diff tests/golden/`` shows them).

Files, all in this directory:
- ``replay_small.jsonl``: the events, in the order they are decided (one bad line too);
- ``replay_small.profiles.jsonl``: the profiles stored first, each with a ``customer_id``;
- ``replay_small.expected.jsonl``: one line per event: the decision as ``Decision.to_dict()``
  gives it, or ``{"line": N, "error": "..."}`` for an event the engine refuses (the same
  shape as ``nba replay``).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES = ROOT / "rules"
EVENTS = HERE / "replay_small.jsonl"
PROFILES = HERE / "replay_small.profiles.jsonl"
EXPECTED = HERE / "replay_small.expected.jsonl"


def read_jsonl(path: Path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def replay(rules: Path = RULES, events: Path = EVENTS, profiles: Path = PROFILES) -> list[dict]:
    """Every event's decision (or error), on a fresh engine with the in-memory store."""
    from nba.engine import Engine, EngineError

    engine = Engine.from_path(rules)
    for profile in read_jsonl(profiles):
        profile = dict(profile)
        engine.put_profile(profile.pop("customer_id"), profile)
    out = []
    for number, event in enumerate(read_jsonl(events), 1):
        try:
            out.append(engine.decide(event).to_dict())
        except EngineError as exc:
            out.append({"line": number, "error": str(exc)})
    return out


def write_expected(path: Path = EXPECTED) -> int:
    decisions = replay()
    with open(path, "w", encoding="utf-8") as handle:
        for decision in decisions:
            handle.write(json.dumps(decision, sort_keys=True) + "\n")
    return len(decisions)


def main() -> int:
    count = write_expected()
    print(f"wrote {count} expected decisions to {EXPECTED.relative_to(ROOT)}; review them with git diff")
    return 0
