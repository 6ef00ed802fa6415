"""What each event type's decision reads of the state (dsl/needs.py)."""

from __future__ import annotations

from nba.dsl import load_text
from nba.dsl.compiler import LATE_EVENTS_S
from nba.engine import Engine
from nba.engine.state import CustomerState, History

RULES = """
segment buyer = count(purchase within 7d) > 0
policy email: cap 2 per 7d
policy all: cap 9 per 2d

rule browse_offer
  when event.type == "page_view" and count(page_view where category == event.category within 30m) >= 2
  then banner via web with seen = count(app_open within 1d)
  cap 1 per 1d
end

rule cart_mail
  priority 10 + (if buyer then 5 else 0)
  when event.type == "cart_abandoned"
  then reminder via email
end

rule anything
  when event.amount > 100
  then big via web
end

on purchase
  when sum(purchase.amount within 90d) > 10
  set big_spender = true
end

default fallback via web with n = count(signup within 365d)
"""


def windows(needs) -> dict:
    assert all(need.late_s == LATE_EVENTS_S for need in needs.history.values())  # kept, not read
    return {kind: need.window for kind, need in needs.history.items()}


def contact_window(needs) -> float:
    return needs.contact_window  # what a decision reads: the caps' own windows, no slack


def test_each_type_reads_what_its_rules_updates_and_the_default_use():
    ruleset = load_text(RULES)
    page_view = ruleset.needs_for("page_view")
    # its rule's `when` and parameters, and the default's; `policy all` and its cap
    assert windows(page_view) == {"page_view": 1800.0, "app_open": 86400.0, "signup": 365 * 86400.0}
    assert contact_window(page_view) == 2 * 86400.0
    cart = ruleset.needs_for("cart_abandoned")
    # the segment in the priority; `policy email` applies to an email rule
    assert windows(cart) == {"purchase": 7 * 86400.0, "signup": 365 * 86400.0}
    assert contact_window(cart) == 7 * 86400.0
    purchase = ruleset.needs_for("purchase")  # no bucket of its own: the `on` update's sum
    assert windows(purchase) == {"purchase": 90 * 86400.0, "signup": 365 * 86400.0}
    other = ruleset.needs_for("login")
    assert windows(other) == {"signup": 365 * 86400.0}
    assert contact_window(other) == 2 * 86400.0  # `anything` is in every bucket


def test_reads_keep_the_stored_layout_and_never_exceed_what_is_kept():
    ruleset = load_text(RULES)
    for event_type in ("page_view", "cart_abandoned", "purchase", "login"):
        reads = ruleset.needs_for(event_type)
        for kind, need in reads.history.items():
            kept = ruleset.needs.history[kind]
            assert need.fields == kept.fields
            assert need.window <= kept.window
        assert reads.contact_window <= ruleset.needs.contact_window
        assert reads.contact_keep == ruleset.needs.contact_keep  # a read trims as writes keep
        assert reads.profile_schema is ruleset.needs.profile_schema


def test_equal_reads_are_one_object():
    ruleset = load_text("""
rule a when event.type == "x" then one via web end
rule b when event.type == "y" then two via web end
""")
    assert ruleset.needs_for("x") is ruleset.needs_for("y") is ruleset.needs_for("z")
    assert not ruleset.needs_for("x").history and ruleset.needs_for("x").contact_window == 0.0


def test_a_decision_on_the_narrowed_state_is_the_decision_on_the_whole_state():
    """What a type's decision does not read cannot change it: strip the state to its
    reads and decide again."""
    from nba.engine.procedure import evaluate

    ruleset = load_text(RULES)
    t = 1_767_225_600.0
    history = {
        "page_view": History([t - 60, t - 30], {"category": ["shoes", "shoes"]}),
        "app_open": History([t - 3600], {}),
        "purchase": History([t - 86400 * 3], {"amount": [50]}),
        "signup": History([t - 86400 * 100], {}),
    }
    for event in (
        {"customer_id": "c", "type": "page_view", "time": t, "category": "shoes"},
        {"customer_id": "c", "type": "cart_abandoned", "time": t},
        {"customer_id": "c", "type": "purchase", "time": t, "amount": 500},
        {"customer_id": "c", "type": "login", "time": t},
    ):
        whole = evaluate(ruleset, event, CustomerState({}, history, []), 3, True)
        reads = ruleset.needs_for(event["type"])
        narrowed = {kind: h for kind, h in history.items() if kind in reads.history}
        part = evaluate(ruleset, event, CustomerState({}, narrowed, []), 3, True)
        assert part.choices == whole.choices
        assert part.trace == whole.trace
        assert part.write == whole.write


def test_the_engine_reads_with_the_event_types_needs():
    ruleset = load_text(RULES)
    engine = Engine(ruleset)
    seen = []
    read = engine.store.read

    def recording_read(customer_id, needs, time):
        seen.append(needs)
        return read(customer_id, needs, time)

    engine.store.read = recording_read
    engine.decide({"customer_id": "c", "type": "cart_abandoned", "time": 1_767_225_600})
    assert seen == [ruleset.needs_for("cart_abandoned")]
