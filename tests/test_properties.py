"""Properties of deciding with the example ruleset in rules/, over generated event streams.

- a replay is deterministic: the same events on two fresh engines give the same decisions
  (and asking for an explanation changes nothing but the trace);
- a dry run changes no state: the profile, the history and the contacts are as before, so
  the next decision is the same as without the dry run;
- ``limit`` never gives two choices with the same action (or from the same rule).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import load_ruleset
from nba.engine import Engine

RULESET = load_ruleset(Path(__file__).resolve().parent.parent / "rules")
CUSTOMERS = ["a", "b", "held-out-8"]
CATEGORIES = ["shoes", "electronics", "watches", "toys", None]
# around the start of the Black Friday window, so campaigns switch on and off
BASE = 1795737600 - 2 * 86400  # 2026-11-25T00:00:00Z
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def events_for(kind: str):
    common = {"customer_id": st.sampled_from(CUSTOMERS), "time": st.integers(0, 4 * 86400).map(lambda s: BASE + s)}
    if kind == "page_view":
        fields = {"category": st.sampled_from(CATEGORIES), "price": st.sampled_from([20, 150, 450, 900])}
    elif kind == "cart_abandoned":
        fields = {"cart_value": st.sampled_from([0, 30, 50, 51, 80, 250])}
    elif kind == "purchase":
        fields = {"amount": st.sampled_from([10, 99.5, 600, 1200])}
    else:
        fields = {}
    return st.fixed_dictionaries({**common, **fields}).map(lambda e: {"type": kind, **e})


EVENT = st.sampled_from(
    ["page_view", "page_view", "cart_abandoned", "purchase", "app_open", "newsletter_signup"]
).flatmap(events_for)
# mostly in time order with small jumps back, as real streams are
EVENTS = st.lists(EVENT, min_size=1, max_size=30).map(lambda es: sorted(es, key=lambda e: e["time"] // 3600))
PROFILE = st.fixed_dictionaries(
    {},
    optional={
        "tier": st.sampled_from(["standard", "silver", "gold", "platinum"]),
        "lifetime_value": st.sampled_from([0, 400, 999, 1500]),
        "order_count": st.integers(0, 5),
        "email_opt_in": st.booleans(),
        "push_opt_in": st.booleans(),
        "last_purchase_at": st.integers(0, 400).map(lambda days: BASE - days * 86400),
    },
)
PROFILES = st.fixed_dictionaries({c: PROFILE for c in CUSTOMERS})


def fresh(profiles: dict) -> Engine:
    engine = Engine(RULESET)
    for customer, profile in profiles.items():
        if profile:
            engine.put_profile(customer, profile)
    return engine


def state_of(engine: Engine, customer: str, time: float):
    state = engine.store.read(customer, RULESET.needs, time)
    return state.profile, state.history, state.contacts


@SETTINGS
@given(profiles=PROFILES, events=EVENTS, limit=st.integers(1, 4))
def test_a_replay_is_deterministic(profiles, events, limit):
    first, second = fresh(profiles), fresh(profiles)
    one = [first.decide(e, limit=limit, explain=True).to_dict() for e in events]
    two = [second.decide(e, limit=limit, explain=True).to_dict() for e in events]
    assert one == two
    for customer in CUSTOMERS:
        assert first.get_profile(customer) == second.get_profile(customer)
    # asking for an explanation changes nothing but the trace
    third = fresh(profiles)
    plain = [third.decide(e, limit=limit).to_dict() for e in events]
    assert [{k: v for k, v in d.items() if k != "trace"} for d in one] == plain


@SETTINGS
@given(profiles=PROFILES, events=EVENTS, probe=EVENT, then=EVENT, limit=st.integers(1, 4))
def test_a_dry_run_changes_no_state(profiles, events, probe, then, limit):
    dry, plain = fresh(profiles), fresh(profiles)
    for event in events:
        dry.decide(event)
        plain.decide(event)
    customer = probe["customer_id"]
    before = state_of(dry, customer, probe["time"])
    profile_before = dry.get_profile(customer)
    dry_decision = dry.decide(probe, limit=limit, dry_run=True, explain=True)
    assert dry.get_profile(customer) == profile_before
    assert state_of(dry, customer, probe["time"]) == before
    # the dry run decides what a real decision would
    assert dry_decision.to_dict() == plain.decide(probe, limit=limit, dry_run=True, explain=True).to_dict()
    # and whatever comes next is decided as if it never happened
    for engine_next in (probe, then):
        assert (
            dry.decide(engine_next, limit=limit, explain=True).to_dict()
            == plain.decide(engine_next, limit=limit, explain=True).to_dict()
        )
    for c in CUSTOMERS:
        assert dry.get_profile(c) == plain.get_profile(c)


@SETTINGS
@given(profiles=PROFILES, events=EVENTS, limit=st.integers(1, 6))
def test_limit_never_gives_one_action_twice(profiles, events, limit):
    engine = fresh(profiles)
    for event in events:
        decision = engine.decide(event, limit=limit)
        actions = [choice.action for choice in decision.choices]
        rules = [choice.rule for choice in decision.choices]
        assert len(actions) == len(set(actions)), decision
        assert len(rules) == len(set(rules)), decision
        assert 1 <= len(decision.choices) <= limit  # the ruleset has a default
        if "default" in rules:
            assert rules == ["default"]
