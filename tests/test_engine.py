"""The Python API of INTERFACES.md and the decision procedure end to end on the in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from nba.dsl import LoadError, load_ruleset, load_text
from nba.engine import Engine, EventError, RequestError
from nba.engine.store.memory import MemoryStore

RULES = """
profile { tier: string, lifetime_value: number, email_opt_in: bool }
event cart_abandoned { cart_value: number }
event purchase { amount: number }

segment vip = profile.tier in ["gold", "platinum"]

policy email: cap 2 per 7d
policy all: cap 3 per 1d

rule cart_rescue "Recover an abandoned cart"
  priority 80
  when event.type == "cart_abandoned" and event.cart_value > 50 and profile.email_opt_in
  then cart_reminder via email with discount = 10, value = event.cart_value
  cap 1 per 24h
end

rule cart_push
  priority 70
  when event.type == "cart_abandoned"
  then cart_reminder via push
end

rule vip_offer
  priority 60
  when event.type == "cart_abandoned" and vip
  then vip_offer via email
end

rule sms_nudge
  priority 50
  when event.type == "cart_abandoned"
  then sms_nudge via sms
end

rule broken
  priority 90
  when event.type == "cart_abandoned" and coalesce(event.cart_value, "none") > "a"
  then never
end

rule held_out
  priority 100
  when event.type == "cart_abandoned"
  then control
  holdout 100%
end

rule black_friday
  priority 5
  when event.type == "cart_abandoned"
  then bf_banner via web
  active from 2026-11-27 to 2026-12-01
end

on purchase
  set lifetime_value = coalesce(profile.lifetime_value, 0) + event.amount
end

default browse via web
"""

T0 = 1_795_000_000  # 2026-11-18


@pytest.fixture
def engine(write_rules):
    return Engine.from_path(write_rules(RULES))


def cart(t=T0, value=80, customer="c1", **extra):
    return {"customer_id": customer, "type": "cart_abandoned", "time": t, "cart_value": value, **extra}


def test_three_lines_embed_the_engine(engine):
    engine.put_profile("c1", {"email_opt_in": True})
    decision = engine.decide(cart())
    assert (decision.rule, decision.action, decision.channel) == ("cart_rescue", "cart_reminder", "email")
    assert decision.params == {"discount": 10, "value": 80}
    assert decision.to_dict()["alternatives"] == [] and decision.degraded is False


def test_limit_gives_alternatives_without_repeating_an_action(engine):
    engine.put_profile("c1", {"email_opt_in": True, "tier": "gold"})
    decision = engine.decide(cart(), limit=3)
    assert [c.rule for c in decision.choices] == ["cart_rescue", "vip_offer", "sms_nudge"]
    assert [a["rule"] for a in decision.to_dict()["alternatives"]] == ["vip_offer", "sms_nudge"]


def test_trace_names_every_reason_a_rule_is_passed_over(engine):
    engine.put_profile("c1", {"email_opt_in": True, "tier": "gold"})
    engine.decide(cart(t=T0))  # cart_rescue recorded: its cap is now used
    assert engine.decide(cart(t=T0 + 60)).rule == "cart_push"  # the cap passes cart_rescue over
    decision = engine.decide(cart(t=T0 + 120), limit=3, explain=True)
    trace = {entry.rule: entry for entry in decision.trace}
    assert trace["held_out"].outcome == "passed_over" and trace["held_out"].reason == "holdout"
    assert trace["broken"].outcome == "error" and "`>`" in trace["broken"].error
    assert trace["cart_rescue"].reason == "cap"
    assert trace["cart_push"].outcome == "chosen"  # the third contact today
    assert trace["vip_offer"].reason == "policy all: cap 3 per 1d"
    assert trace["sms_nudge"].reason == "policy all: cap 3 per 1d"
    assert trace["black_friday"].outcome == "inactive"
    assert [entry.rule for entry in decision.trace][:4] == ["held_out", "cart_rescue", "cart_push", "vip_offer"]
    assert decision.rule == "cart_push" and decision.alternatives == []


def test_same_action_is_given_once(engine):
    engine.put_profile("c7", {"email_opt_in": True})
    decision = engine.decide(cart(customer="c7"), limit=2, explain=True)
    assert [c.rule for c in decision.choices] == ["cart_rescue", "sms_nudge"]
    assert next(e for e in decision.trace if e.rule == "cart_push").reason == "same_action"


def test_not_reached_after_the_limit(engine):
    decision = engine.decide(cart(customer="c8"), explain=True)
    outcomes = {entry.rule: entry.outcome for entry in decision.trace}
    assert outcomes["cart_push"] == "chosen" and outcomes["sms_nudge"] == "not_reached"
    assert outcomes["cart_rescue"] == "not_matched"


def test_policy_counts_what_the_same_decision_chose(engine):
    engine.put_profile("c1", {"email_opt_in": True, "tier": "gold"})
    engine.decide(cart(t=T0 - 3 * 86400))  # one email this week
    decision = engine.decide(cart(t=T0), limit=3, explain=True)
    # cart_rescue (email) is the second email of the week; vip_offer would be the third.
    assert [c.rule for c in decision.choices] == ["cart_rescue", "sms_nudge"]
    trace = {entry.rule: entry for entry in decision.trace}
    assert trace["vip_offer"].reason == "policy email: cap 2 per 7d"


def test_policy_all_counts_every_recorded_action(engine):
    engine.put_profile("c1", {"email_opt_in": False})
    seen = [engine.decide(cart(t=T0 + i)).rule for i in range(5)]
    # cart_push has no cap of its own; `policy all: cap 3 per 1d` stops it after three.
    assert seen == ["cart_push", "cart_push", "cart_push", "default", "default"]


def test_default_is_not_recorded_and_ignores_caps(engine):
    for i in range(5):
        decision = engine.decide({"customer_id": "c2", "type": "page_view", "time": T0 + i})
        assert decision.rule == "default" and decision.action == "browse" and decision.channel == "web"


def test_runtime_error_only_fails_its_own_rule(engine):
    decision = engine.decide(cart(), explain=True)
    entry = next(e for e in decision.trace if e.rule == "broken")
    assert entry.outcome == "error" and "`>`" in entry.error
    assert decision.rule == "cart_push"


def test_active_window(engine):
    decision = engine.decide(cart(t="2026-11-28T10:00:00Z", customer="c3"), limit=5)
    assert "black_friday" in [c.rule for c in decision.choices]
    decision = engine.decide(cart(t="2026-12-01T00:00:00Z", customer="c4"), limit=5)
    assert "black_friday" not in [c.rule for c in decision.choices]


def test_on_updates_and_profiles(engine):
    engine.put_profile("c5", {"lifetime_value": "10.5", "email_opt_in": "true"})
    assert engine.get_profile("c5") == {"lifetime_value": 10.5, "email_opt_in": True}
    engine.decide({"customer_id": "c5", "type": "purchase", "amount": 20, "time": T0})
    assert engine.get_profile("c5")["lifetime_value"] == 30.5
    engine.decide({"customer_id": "c5", "type": "purchase", "amount": 1, "time": T0 + 1}, dry_run=True)
    assert engine.get_profile("c5")["lifetime_value"] == 30.5


def test_bad_profile_is_refused(engine):
    with pytest.raises(RequestError, match="lifetime_value"):
        engine.put_profile("c1", {"lifetime_value": "lots"})
    with pytest.raises(RequestError):
        engine.put_profile("", {})


@pytest.mark.parametrize(
    "event, field",
    [
        ({"type": "x"}, "customer_id"),
        ({"customer_id": "", "type": "x"}, "customer_id"),
        ({"customer_id": "c", "type": 3}, "type"),
        ({"customer_id": "c", "type": "x", "time": "yesterday"}, "time"),
        ({"customer_id": "c", "type": "cart_abandoned", "cart_value": "eighty"}, "cart_value"),
    ],
)
def test_bad_event_is_refused_and_nothing_recorded(engine, event, field):
    with pytest.raises(EventError) as info:
        engine.decide(event)
    assert info.value.field == field
    assert engine.store.customer_count() == 0


def test_bad_limit(engine):
    with pytest.raises(RequestError):
        engine.decide(cart(), limit=0)


def test_dry_run_records_nothing(engine):
    engine.put_profile("c1", {"email_opt_in": True})
    first = engine.decide(cart(), dry_run=True)
    second = engine.decide(cart(t=T0 + 1))
    assert first.rule == second.rule == "cart_rescue"


def test_reload_swaps_or_keeps_the_old_ruleset(engine, write_rules):
    engine.put_profile("c1", {"email_opt_in": True})
    path = engine.path
    write_rules(RULES.replace("cart_reminder via email", "cart_mail via email"))
    engine.reload()
    assert engine.decide(cart()).action == "cart_mail"
    write_rules("rule oops when then x end")
    with pytest.raises(LoadError) as info:
        engine.reload(path)
    assert "error:" in str(info.value)
    engine.put_profile("c9", {"email_opt_in": True})
    assert engine.decide(cart(customer="c9")).action == "cart_mail"
    assert engine.ruleset.rules[0].action == "cart_mail"


def test_decide_async_matches_decide(write_rules):
    sync_engine = Engine.from_path(write_rules(RULES))
    async_engine = Engine.from_path(write_rules(RULES))
    events = [cart(t=T0 + i, customer=f"c{i % 3}") for i in range(12)]

    async def run():
        return [await async_engine.decide_async(e, limit=2, explain=True) for e in events]

    expected = [sync_engine.decide(e, limit=2, explain=True).to_dict() for e in events]
    assert [d.to_dict() for d in asyncio.run(run())] == expected


class AwaitedMemoryStore(MemoryStore):
    """The in-memory store as a store that waits (no engine lock): ``decide_map_then``
    reads and commits through the Store interface's ``read_then``/``commit_then``."""

    decision_lock = None


def test_decide_map_then_matches_decide(write_rules):
    path = write_rules(RULES)
    sync_engine = Engine.from_path(path)
    engines = [Engine.from_path(path), Engine(load_ruleset(path), AwaitedMemoryStore())]
    events = [cart(t=T0 + i, customer=f"c{i % 3}") for i in range(12)]
    bad = {"customer_id": "c1", "type": "cart_abandoned", "cart_value": "lots", "time": T0}

    def decide_map_then(engine, event, **options) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()

        def then(decision, error):
            assert not future.done(), "told twice"
            future.set_result(decision if error is None else error)

        engine.decide_map_then(event, then, **options)
        return future

    async def run(engine):
        decisions = await asyncio.gather(*(decide_map_then(engine, e, limit=2, explain=True) for e in events))
        failed = await decide_map_then(engine, bad)
        return decisions, type(failed).__name__

    expected = [sync_engine.decide(e, limit=2, explain=True).to_dict() for e in events]
    for engine in engines:
        assert asyncio.run(run(engine)) == (expected, "EventError")


def test_time_comes_from_the_event(write_rules):
    events = [cart(t=T0 + i * 3600, customer=f"c{i % 2}") for i in range(30)]
    first = Engine.from_path(write_rules(RULES))
    second = Engine.from_path(write_rules(RULES))
    assert [first.decide(e).to_dict() for e in events] == [second.decide(e).to_dict() for e in events]


def test_on_update_values_are_read_through_the_profile_schema(write_rules):
    engine = Engine.from_path(
        write_rules("""
profile { ltv: number, vip: bool }
on purchase
  set ltv = event.amount
  set vip = event.flag
end
rule big when event.type == "visit" and profile.ltv >= 100 then thanks end
""")
    )
    engine.decide({"customer_id": "c", "type": "purchase", "amount": "150", "flag": "yes", "time": T0})
    assert engine.get_profile("c") == {"ltv": 150}  # "yes" is not a bool: that set fails
    assert engine.decide({"customer_id": "c", "type": "visit", "time": T0 + 1}).rule == "big"


def test_infinite_numbers_are_refused_for_declared_number_fields(engine):
    with pytest.raises(EventError) as info:
        engine.decide(cart(value=float("inf")))
    assert info.value.field == "cart_value"


def test_memory_store_sweeps_quiet_customers(write_rules):
    from nba.engine.store import memory

    engine = Engine.from_path(write_rules('rule r when event.type == "v" and count(v within 1h) > 5 then a end'))
    engine.put_profile("kept", {"x": 1})
    engine.decide({"customer_id": "kept", "type": "v", "time": T0})
    engine.decide({"customer_id": "gone", "type": "v", "time": T0})
    needs = engine.ruleset.needs
    assert engine.store.sweep(T0 + 1800, needs) == 0  # still inside the window
    assert engine.store.sweep(T0 + needs.retention + 1, needs) == 2
    assert engine.store.customer_count() == 1 and engine.get_profile("kept") == {"x": 1}
    assert engine.store.history_sizes("kept") == {}
    assert memory.SWEEP_EVERY_COMMITS >= 1000  # commits sweep now and then, not every time


def test_decide_map_is_the_decision_as_a_map(write_rules):
    first = Engine.from_path(write_rules(RULES))
    second = Engine.from_path(write_rules(RULES))
    for engine in (first, second):
        engine.put_profile("c0", {"email_opt_in": True, "tier": "gold"})
    events = [cart(t=T0 + i * 600, customer=f"c{i % 3}") for i in range(12)]
    events.append({"customer_id": "c0", "type": "purchase", "time": T0 + 9000, "amount": 5})
    for limit, explain in ((1, False), (3, True)):
        expected = [first.decide(e, limit=limit, explain=explain).to_dict() for e in events]
        assert [second.decide_map(e, limit=limit, explain=explain) for e in events] == expected
    assert first.stats.snapshot() == second.stats.snapshot()
    assert first.get_profile("c0") == second.get_profile("c0")


INF = float("inf")


@pytest.mark.parametrize(
    "event, expected",
    [
        (
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": 80, "time": 5},
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": 80, "time": 5},
        ),
        (
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": "80.5", "time": "2026-11-18T10:00:00Z"},
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": 80.5, "time": 1794996000},
        ),
        (
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": 1.5, "time": 1.5},
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": 1.5, "time": 1.5},
        ),
        ({"customer_id": "c", "type": "cart_abandoned", "cart_value": INF, "time": 5}, "cart_value"),
        ({"customer_id": "c", "type": "cart_abandoned", "cart_value": True, "time": 5}, "cart_value"),
        (
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": None, "time": 5},
            {"customer_id": "c", "type": "cart_abandoned", "cart_value": None, "time": 5},
        ),
        ({"customer_id": "c", "type": "purchase", "amount": "x", "time": 5}, "amount"),
        (
            {"customer_id": "c", "type": "undeclared", "anything": [1], "time": 5},
            {"customer_id": "c", "type": "undeclared", "anything": [1], "time": 5},
        ),
        ({"customer_id": "c", "type": "x", "time": float("nan")}, "time"),
        ({"customer_id": "c", "type": "x", "time": INF}, "time"),
        ({"customer_id": "c", "type": "x", "time": "yesterday"}, "time"),
        ({"customer_id": "", "type": "x"}, "customer_id"),
        ({"type": "x"}, "customer_id"),
        ({"customer_id": "c", "type": 3}, "type"),
        (["not", "a", "map"], None),
    ],
)
def test_the_event_check_reads_declared_fields_and_names_the_bad_one(engine, event, expected):
    """DSL.md step 1 (event_checker is the engine's check, check_event the same for one event);
    an expected string is the field the error names."""
    from nba.engine.events import check_event, event_checker

    schemas = engine.ruleset.event_schemas
    for check in (event_checker(schemas), lambda raw: check_event(raw, schemas)):
        if isinstance(expected, dict):
            checked = check(event)
            assert checked == expected and [type(v) for v in checked.values()] == [type(v) for v in expected.values()]
            assert checked is not event
        else:
            with pytest.raises(EventError) as info:
                check(event)
            assert info.value.field == expected


def test_an_event_without_a_time_is_given_now():
    from nba.engine.events import check_event, event_checker

    assert check_event({"customer_id": "c", "type": "x"}, {}, now=42.0)["time"] == 42.0
    assert event_checker({}, now=7)({"customer_id": "c", "type": "x"})["time"] == 7
    before = __import__("time").time()
    assert before <= event_checker({})({"customer_id": "c", "type": "x"})["time"] <= before + 60


def test_event_times_read_from_the_minute_cache_are_parse_times():
    import random

    from nba.dsl.twins import runtime
    from nba.engine.events import parse_event_time

    rng = random.Random(3)
    texts = [
        "2026-11-27T00:12:47Z",
        "2026-11-27T00:12:60Z",
        "2026-02-30T00:12:47Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T00:12:4xZ",
        "2026-11-27t00:12:47Z",
        "2026-11-27T00:12:47z",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:07Z",
        "9999-12-31T23:59:59Z",
        "2026-11-27T00:1\uff12:47Z",
        "2026-11-27T00:12:\u0664\u0667Z",
        "2026-11-27 00:12:47Z",
        "2026-13-27T00:12:47Z",
        "2026-11-27T00:12:+7Z",
        "2026-11-27T00:12:47.5Z",
    ]
    texts += [
        f"{rng.randrange(1, 10000):04d}-{rng.randrange(0, 14):02d}-{rng.randrange(0, 33):02d}"
        f"T{rng.randrange(0, 26):02d}:{rng.randrange(0, 62):02d}:{rng.randrange(0, 62):02d}Z"
        for _ in range(3000)
    ]
    for text in texts + texts:  # the second time from the cache
        expected = runtime.parse_time(text)
        got = parse_event_time(text)
        assert (got, type(got)) == (expected, type(expected)), text


def test_a_ranked_decision_tests_no_rule_after_its_limit():
    """README: a ranked bucket stops testing once `limit` actions are chosen, so the error of
    a rule ranked after them is neither raised nor counted (an explanation tests them all)."""
    from nba.engine.procedure import evaluate
    from nba.engine.state import CustomerState

    ruleset = load_text("""
rule first priority 10 when event.type == "x" then a via web end
rule broken priority 5 when event.type == "x" and event.amount > 5 then b via web end
rule later priority 1 when event.type == "x" then c via web end
""")
    event = {"customer_id": "c", "type": "x", "time": 1.0, "amount": "abc"}

    def decide(limit, explain):
        outcome = evaluate(ruleset, event, CustomerState({}, {}, []), limit, explain)
        return [choice.rule for choice in outcome.choices], [rule for rule, _message in outcome.errors]

    assert decide(1, False) == (["first"], [])
    assert decide(1, True) == (["first"], ["broken"])
    assert decide(2, False) == (["first", "later"], ["broken"])
