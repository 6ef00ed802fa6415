"""DSL.md, "Aggregates over the customer's history": the seven aggregates, `where`, `within`.

The history is built by deciding past events (each decision records its event); a
`check` event then reads the aggregates through its parameters, as a dry run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.engine import EventError

from dsl_helpers import T0, EvalFailed, engine_for, event, trace_entry

AGGREGATES = """
rule probe when event.type == "check" then probe with
  n = count(buy within 1h),
  s = sum(buy.amount within 1h),
  av = avg(buy.amount within 1h),
  mn = min(buy.amount within 1h),
  mx = max(buy.amount within 1h),
  d = distinct(buy.amount within 1h),
  si = since(buy within 1h)
end
"""


def history(engine, *events):
    for item in events:
        engine.decide(item)
    return engine


def check(engine, time=T0, **fields):
    decision = engine.decide(event("check", time=time, **fields), dry_run=True, explain=True)
    if decision.action != "probe":
        raise EvalFailed(trace_entry(decision, "probe").error)
    return decision.params


def buy(seconds_ago, amount=None, time=None, **fields):
    if amount is not None:
        fields["amount"] = amount
    return event("buy", time=T0 - seconds_ago if time is None else time, **fields)


def test_nothing_in_the_window_sum_0_others_null():
    params = check(engine_for(AGGREGATES))
    assert params == {"n": 0, "s": 0, "av": None, "mn": None, "mx": None, "d": 0, "si": None}


def test_all_seven_aggregates_without_where():
    engine = history(engine_for(AGGREGATES), buy(600, 10), buy(300, 30), buy(60, 20))
    assert check(engine) == {"n": 3, "s": 60, "av": 20.0, "mn": 10, "mx": 30, "d": 3, "si": 60}


def test_the_window_is_open_at_t_minus_d_and_closed_at_t():
    engine = history(engine_for(AGGREGATES), buy(3600, 1), buy(3599, 2), buy(0, 4))
    # the event exactly at t - 1h is out; the one just after it and the one at t are in
    assert check(engine) == {"n": 2, "s": 6, "av": 3.0, "mn": 2, "mx": 4, "d": 2, "si": 0}
    # one second later the event at t - 3599 falls out too
    assert check(engine, time=T0 + 1)["n"] == 1
    # one second earlier the first event is in and the one at T0 is not yet
    engine = history(engine_for(AGGREGATES), buy(3600, 1), buy(3599, 2))
    assert check(engine, time=T0 - 1) == {"n": 2, "s": 3, "av": 1.5, "mn": 1, "mx": 2, "d": 2, "si": 3598}


def test_the_event_being_decided_is_included():
    rules = """
    rule r when event.type == "buy" then a with
      n = count(buy within 1h), s = sum(buy.amount within 1h), av = avg(buy.amount within 1h),
      mn = min(buy.amount within 1h), mx = max(buy.amount within 1h), d = distinct(buy.amount within 1h),
      si = since(buy within 1h), big = count(buy where amount > 50 within 1h)
    end
    """
    engine = engine_for(rules)
    first = engine.decide(buy(0, 80, time=T0))
    assert first.params == {"n": 1, "s": 80, "av": 80.0, "mn": 80, "mx": 80, "d": 1, "si": 0, "big": 1}
    second = engine.decide(buy(0, 20, time=T0 + 10))
    assert second.params == {"n": 2, "s": 100, "av": 50.0, "mn": 20, "mx": 80, "d": 2, "si": 0, "big": 1}


def test_since_is_0_when_the_current_event_matches_and_null_when_none():
    rules = """
    rule r when event.type == "buy" then a with
      any = since(buy within 1d), big = since(buy where amount > 50 within 1d)
    end
    """
    engine = engine_for(rules)
    assert engine.decide(buy(0, 10, time=T0)).params == {"any": 0, "big": None}
    assert engine.decide(buy(0, 90, time=T0 + 100)).params == {"any": 0, "big": 0}
    assert engine.decide(buy(0, 10, time=T0 + 250)).params == {"any": 0, "big": 150}


def test_since_takes_the_latest_matching_event():
    engine = history(engine_for(AGGREGATES), buy(900, 1), buy(100, 1), buy(500, 1))
    assert check(engine)["si"] == 100


def test_out_of_order_past_events_are_counted_at_their_own_time():
    engine = engine_for(AGGREGATES)
    history(engine, buy(0, 5, time=T0 + 600))  # the newest first
    history(engine, buy(0, 7, time=T0 - 60))  # then an older one arrives
    # a later decision whose window holds the older event counts it
    assert check(engine, time=T0) == {"n": 1, "s": 7, "av": 7.0, "mn": 7, "mx": 7, "d": 1, "si": 60}
    # and one whose window holds both counts both
    assert check(engine, time=T0 + 600)["n"] == 2
    assert check(engine, time=T0 + 600)["si"] == 0


def test_sum_avg_min_max_skip_missing_and_non_numbers():
    engine = history(
        engine_for(AGGREGATES),
        buy(50, 10),
        buy(40, "12"),  # no schema: a string stays a string
        buy(30),  # missing
        buy(20, True),
        buy(10, None),
        buy(5, [1]),
        buy(1, 2.5),
    )
    params = check(engine)
    assert params["n"] == 7
    assert (params["s"], params["av"], params["mn"], params["mx"]) == (12.5, 6.25, 2.5, 10)


def test_only_non_numbers_give_sum_0_and_null_avg_min_max():
    engine = history(engine_for(AGGREGATES), buy(50, "x"), buy(40))
    params = check(engine)
    assert (params["n"], params["s"], params["av"], params["mn"], params["mx"]) == (2, 0, None, None, None)


def test_distinct_counts_non_null_values_with_10_and_10_0_the_same():
    engine = history(
        engine_for(AGGREGATES),
        buy(60, 10),
        buy(50, 10.0),
        buy(40, "10"),
        buy(30),
        buy(20, None),
        buy(10, True),
        buy(5, 1),
    )
    # 10 == 10.0; "10", true and 1 are three more values; the two nulls are not counted
    assert check(engine)["d"] == 4


def test_distinct_of_lists_and_maps():
    rules = 'rule probe when event.type == "check" then probe with d = distinct(buy.tags within 1h) end'
    engine = history(
        engine_for(rules),
        buy(30, tags=[1, 2]),
        buy(20, tags=[1.0, 2]),
        buy(10, tags={"a": 1}),
        buy(5, tags={"a": 1.0}),
        buy(1, tags=[2, 1]),
    )
    assert check(engine)["d"] == 3


WHERE_RULES = """
rule probe when event.type == "check" then probe with
  n = count(buy where amount >= 20 within 1h),
  s = sum(buy.amount where category == "shoes" within 1h),
  av = avg(buy.amount where category != "shoes" within 1h),
  mn = min(buy.amount where amount > 10 within 1h),
  mx = max(buy.amount where amount < 30 within 1h),
  d = distinct(buy.category where amount > 0 within 1h),
  si = since(buy where category == "hats" within 1h),
  none = count(buy where category == "gloves" within 1h),
  at_time = count(buy where time > event.time - 10m within 1h),
  by_type = count(buy where type == "buy" within 1h)
end
"""


def test_all_seven_aggregates_with_where():
    engine = history(
        engine_for(WHERE_RULES),
        buy(1800, 10, category="shoes"),
        buy(1200, 20, category="hats"),
        buy(900, 30, category="shoes"),
        buy(300, 40, category="bags"),
    )
    assert check(engine) == {
        "n": 3,
        "s": 40,
        "av": 30.0,
        "mn": 20,
        "mx": 20,
        "d": 3,
        "si": 1200,
        "none": 0,
        "at_time": 1,
        "by_type": 4,
    }


def test_where_sees_the_current_event_and_profile():
    rules = """
    rule probe when event.type == "check" then probe with
      same = count(view where category == event.category within 1d),
      fav = count(view where category == profile.favourite within 1d),
      pricier = count(view where price > event.price within 1d)
    end
    """
    engine = engine_for(rules)
    engine.put_profile("c1", {"favourite": "hats"})
    history(
        engine,
        event("view", time=T0 - 30, category="shoes", price=10),
        event("view", time=T0 - 20, category="hats", price=50),
        event("view", time=T0 - 10, category="shoes", price=70),
    )
    assert check(engine, category="shoes", price=20) == {"same": 2, "fav": 1, "pricier": 2}


def test_a_bare_name_inside_where_is_a_field_of_the_past_event_not_a_segment():
    rules = """
    segment vip = profile.tier == "gold"
    rule probe when event.type == "check" and vip then probe with
      n = count(view where vip within 1d)
    end
    """
    engine = engine_for(rules)
    engine.put_profile("c1", {"tier": "gold"})
    history(engine, event("view", time=T0 - 20, vip=True), event("view", time=T0 - 10, vip=False))
    assert check(engine) == {"n": 1}


def test_where_reaches_into_nested_fields_of_the_past_event():
    rules = """
    rule probe when event.type == "check" then probe with
      n = count(view where item.brand == "acme" within 1d),
      s = sum(view.item.price within 1d)
    end
    """
    engine = history(
        engine_for(rules),
        event("view", time=T0 - 20, item={"brand": "acme", "price": 5}),
        event("view", time=T0 - 10, item={"brand": "other", "price": 7}),
        event("view", time=T0 - 5, item="not a map"),
    )
    assert check(engine) == {"n": 1, "s": 12}


def test_aggregates_in_when_and_priority():
    rules = """
    rule repeat priority count(view within 1d) when event.type == "view" and count(view within 1d) >= 3 then nudge end
    """
    engine = engine_for(rules)
    assert engine.decide(event("view", time=T0 - 20)).action is None
    assert engine.decide(event("view", time=T0 - 10)).action is None
    decision = engine.decide(event("view", time=T0), explain=True)
    assert decision.action == "nudge"
    assert trace_entry(decision, "repeat").priority == 3


def test_a_dry_run_records_nothing_in_the_history():
    engine = engine_for(AGGREGATES)
    engine.decide(buy(10, 5), dry_run=True)
    assert check(engine)["n"] == 0
    engine.decide(buy(10, 5))
    assert check(engine)["n"] == 1


def test_a_bad_event_records_nothing_in_the_history():
    engine = engine_for("event buy { amount: number }\n" + AGGREGATES)
    with pytest.raises(EventError):
        engine.decide(buy(10, "lots"))
    assert check(engine)["n"] == 0


def test_history_values_are_the_checked_event_values():
    engine = engine_for("event buy { amount: number }\n" + AGGREGATES)
    history(engine, buy(20, "12.5"), buy(10, "7"))
    assert check(engine)["s"] == 19.5


def test_windows_of_different_lengths_over_one_type():
    rules = """
    rule probe when event.type == "check" then probe with
      short = count(buy within 10m), long = count(buy within 7d), week = count(buy within 1w)
    end
    """
    engine = history(engine_for(rules), buy(60), buy(3600), buy(6 * 86400), buy(8 * 86400))
    assert check(engine) == {"short": 1, "long": 3, "week": 3}


def test_a_kind_error_inside_where_is_a_decision_time_error():
    engine = history(
        engine_for(
            'rule probe when event.type == "check" then probe with n = count(buy where amount > 5 within 1h) end'
        ),
        buy(10, "a lot"),
    )
    with pytest.raises(EvalFailed) as info:
        check(engine)
    assert "`>`" in str(info.value)


# ---- the seven aggregates against a model of DSL.md's window rules ------------------------------


MODEL_RULES = """
rule probe when event.type == "buy" or event.type == "check" then probe with
  n = count(buy within 30s), s = sum(buy.amount within 30s), av = avg(buy.amount within 30s),
  mn = min(buy.amount within 30s), mx = max(buy.amount within 30s), d = distinct(buy.amount within 30s),
  si = since(buy within 30s),
  wn = count(buy where tag == "a" within 1m), ws = sum(buy.amount where tag == "a" within 1m),
  wd = distinct(buy.tag where amount != null within 1m), wsi = since(buy where tag == "a" within 1m)
end
"""
AMOUNTS = [None, 1, 2.5, 10, 10.0, -3, "x", True, [1]]
MISSING = object()


def model_aggregates(past, now, current):
    """past: (time, amount, tag) of recorded buys; current: the buy being decided, or None."""
    events = list(past) + ([(now, *current)] if current is not None else [])

    def within(seconds, where=lambda e: True):
        return [e for e in events if now - seconds < e[0] <= now and where(e)]

    def numbers(items):
        return [e[1] for e in items if isinstance(e[1], (int, float)) and not isinstance(e[1], bool)]

    def distinct(values):
        seen = []
        for v in values:
            if (
                v is not None
                and v is not MISSING
                and not any(
                    type(v) in (int, float) and type(s) in (int, float) and v == s or (type(v) is type(s) and v == s)
                    for s in seen
                )
            ):
                seen.append(v)
        return len(seen)

    def since(items):
        return now - max(e[0] for e in items) if items else None

    short = within(30)
    tagged = within(60, lambda e: e[2] == "a")
    amounts = numbers(short)
    return {
        "n": len(short),
        "s": sum(amounts),
        "av": sum(amounts) / len(amounts) if amounts else None,
        "mn": min(amounts) if amounts else None,
        "mx": max(amounts) if amounts else None,
        "d": distinct(e[1] for e in short),
        "si": since(short),
        "wn": len(tagged),
        "ws": sum(numbers(tagged)),
        "wd": distinct(e[2] for e in within(60, lambda e: e[1] is not None and e[1] is not MISSING)),
        "wsi": since(tagged),
    }


buys = st.lists(
    st.tuples(st.integers(0, 90), st.sampled_from(AMOUNTS + [MISSING]), st.sampled_from(["a", "b", None, MISSING])),
    max_size=8,
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    buys, st.one_of(st.none(), st.tuples(st.sampled_from(AMOUNTS + [MISSING]), st.sampled_from(["a", "b", MISSING])))
)
def test_aggregates_agree_with_a_model_of_the_window_rules(past, current):
    engine = engine_for(MODEL_RULES)
    recorded = []
    for seconds_ago, amount, tag in past:  # in any order: out-of-order events keep their own time
        fields = {k: v for k, v in (("amount", amount), ("tag", tag)) if v is not MISSING}
        engine.decide(event("buy", time=T0 - seconds_ago, **fields))
        recorded.append((T0 - seconds_ago, amount, tag))
    if current is None:
        decision = engine.decide(event("check", time=T0), dry_run=True)
    else:
        fields = {k: v for k, v in (("amount", current[0]), ("tag", current[1])) if v is not MISSING}
        decision = engine.decide(event("buy", time=T0, **fields), dry_run=True)
    expected = model_aggregates(recorded, T0, current)
    for name, value in expected.items():
        got = decision.params[name]
        assert got == value and (value is None or type(got) in (int, float)), (name, got, value)


def test_a_late_event_counts_past_events_its_window_holds():
    """State is kept for the longest window plus LATE_EVENTS_S (300 s) for late events."""
    engine = engine_for('rule probe when event.type == "check" then probe with n = count(buy within 1h) end')
    engine.decide(event("buy", time=T0 - 3800))
    engine.decide(event("buy", time=T0))
    # the check at T0 - 240 arrives late: its window (T0 - 3840, T0 - 240] holds the first buy
    assert check(engine, time=T0 - 240)["n"] == 1


def test_an_event_later_than_the_allowance_misses_trimmed_history():
    engine = engine_for('rule probe when event.type == "check" then probe with n = count(buy within 1h) end')
    engine.decide(event("buy", time=T0 - 4000))
    engine.decide(event("buy", time=T0))  # trims what is older than T0 - 3600 - 300
    assert check(engine, time=T0 - 1800)["n"] == 0
