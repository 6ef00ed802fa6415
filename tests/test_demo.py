"""The demo traffic generator (engine/demo.py) and the committed day in examples/demo."""

from __future__ import annotations

import json
from pathlib import Path

from nba.dsl import load_ruleset
from nba.engine import Engine
from nba.engine.demo import generate, write

ROOT = Path(__file__).resolve().parent.parent


def test_the_same_arguments_give_the_same_day():
    assert generate("2026-12-05", customers=40, seed=3) == generate("2026-12-05", customers=40, seed=3)
    assert generate("2026-12-05", customers=40, seed=3) != generate("2026-12-05", customers=40, seed=4)


def test_a_small_day_is_valid_for_the_example_rules():
    profiles, events = generate("2026-12-05", customers=60, seed=11)
    assert all(p["customer_id"].startswith("c") for p in profiles)
    assert len({p["customer_id"] for p in profiles}) == len(profiles)
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert all(e["time"].startswith("2026-12-05T") for e in events)
    assert {e["type"] for e in events} >= {"page_view", "cart_abandoned", "purchase"}
    engine = Engine(load_ruleset(ROOT / "rules"))
    for profile in profiles:
        profile = dict(profile)
        engine.put_profile(profile.pop("customer_id"), profile)
    rules = {engine.decide(event).rule for event in events}  # raises on an invalid event
    assert {"default", "category_interest_banner"} <= rules


def test_the_committed_demo_day_is_what_the_generator_writes(tmp_path):
    events, profiles = tmp_path / "events.jsonl", tmp_path / "profiles.jsonl"
    counts = write(str(events), str(profiles))
    assert 15_000 <= counts[0] <= 25_000
    demo = ROOT / "examples" / "demo"
    assert events.read_text(encoding="utf-8") == (demo / "events.jsonl").read_text(encoding="utf-8"), (
        "regenerate with: python -m engine.demo"
    )
    assert profiles.read_text(encoding="utf-8") == (demo / "profiles.jsonl").read_text(encoding="utf-8")
    first = json.loads((demo / "profiles.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "customer_id" in first
