"""End to end: a small fixed day of events through rules/, decision by decision.

The expected decisions are in tests/golden/replay_small.expected.jsonl. After a change
that is meant to change them, rewrite the file with ``python -m tests.golden`` and read
``git diff tests/golden/`` before committing it. The sense checks below hold whatever
the golden file says: they are the story the events were written to tell.
"""

from __future__ import annotations

import json

import pytest
from golden import EVENTS, EXPECTED, read_jsonl, replay


@pytest.fixture(scope="module")
def decisions():
    return replay()


def test_the_replay_matches_the_golden_file_line_by_line(decisions):
    events = read_jsonl(EVENTS)
    expected = read_jsonl(EXPECTED)
    assert len(expected) == len(events), "regenerate with: python -m tests.golden"
    assert len(decisions) == len(events)
    differences = []
    for number, (event, want, got) in enumerate(zip(events, expected, decisions), 1):
        if json.dumps(want, sort_keys=True) != json.dumps(got, sort_keys=True):
            differences.append(
                f"line {number}: {json.dumps(event)}\n  expected {json.dumps(want, sort_keys=True)}\n  got      {json.dumps(got, sort_keys=True)}"
            )
    assert not differences, "\n".join(differences)


def _line(decisions, events, customer, time):
    for event, decision in zip(events, decisions):
        if event["customer_id"] == customer and event["time"] == time:
            return decision
    raise AssertionError(f"no event of {customer} at {time}")


@pytest.mark.parametrize(
    "customer, time, rule, params",
    [
        # a lapsed customer (last order in July) opens the app: win-back, then capped
        ("dave", "2026-11-25T09:00:00Z", "winback_email", {"discount": 20, "days_since_last_order": 146}),
        ("dave", "2026-11-25T09:03:00Z", "default", {"category": "bestsellers"}),
        # ... and after his order (on purchase sets last_purchase_at), no win-back on Black Friday
        ("dave", "2026-11-27T12:00:00Z", "black_friday_banner", {"discount": 20}),
        # carts over 50 get the email reminder once a day, and at most two emails a week
        ("anna", "2026-11-25T10:00:00Z", "cart_reminder_email", {"discount": 10, "cart_value": 80}),
        ("anna", "2026-11-25T15:00:00Z", "cart_banner_web", {"cart_value": 120}),
        ("anna", "2026-11-26T10:30:00Z", "cart_reminder_email", {"discount": 10, "cart_value": 60}),
        ("anna", "2026-11-27T11:00:00Z", "cart_banner_web", {"cart_value": 70}),
        # no email without consent, none in the control group, none right after an order
        ("frank", "2026-11-25T13:00:00Z", "cart_banner_web", {"cart_value": 95}),
        ("held-out-8", "2026-11-25T14:00:00Z", "cart_banner_web", {"cart_value": 150}),
        ("erin", "2026-11-25T18:00:00Z", "cart_banner_web", {"cart_value": 70}),
        # the first order starts the welcome series; the second does not
        ("erin", "2026-11-25T11:00:00Z", "first_purchase_welcome", {"first_order_amount": 55.5}),
        ("erin", "2026-11-26T12:00:00Z", "default", {"category": "bestsellers"}),
        # the 3rd shoe view in 30 minutes triggers the banner; the 4th does not
        ("bob", "2026-11-25T12:05:00Z", "default", {"category": "shoes"}),
        ("bob", "2026-11-25T12:10:00Z", "category_interest_banner", {"category": "shoes"}),
        ("bob", "2026-11-25T12:12:00Z", "default", {"category": "shoes"}),
        # VIP upsell, once a day; an order past 1000 makes heidi gold and a VIP
        ("carol", "2026-11-25T12:06:00Z", "vip_upsell", {"tier": "gold"}),
        ("carol", "2026-11-25T12:30:00Z", "default", {"category": "electronics"}),
        ("heidi", "2026-11-25T17:10:00Z", "vip_upsell", {"tier": "gold"}),
        # Black Friday: not the minute before; the banner twice a day; the app deal first
        ("grace", "2026-11-26T23:59:00Z", "default", {"category": "bestsellers"}),
        ("grace", "2026-11-27T09:00:00Z", "black_friday_banner", {"discount": 20}),
        ("grace", "2026-11-27T09:05:00Z", "black_friday_banner", {"discount": 20}),
        ("grace", "2026-11-27T09:10:00Z", "default", {"category": "books"}),
        ("heidi", "2026-11-27T09:15:00Z", "black_friday_app_deal", {"discount": 25}),
        ("heidi", "2026-11-27T09:16:00Z", "black_friday_banner", {"discount": 30}),
        ("bob", "2026-12-01T08:00:00Z", "default", {"category": "bags"}),
    ],
)
def test_the_decisions_make_sense(decisions, customer, time, rule, params):
    decision = _line(decisions, read_jsonl(EVENTS), customer, time)
    assert (decision["rule"], decision["params"]) == (rule, params)


def test_a_bad_line_is_an_error_in_its_place(decisions):
    events = read_jsonl(EVENTS)
    bad = [number for number, event in enumerate(events, 1) if event.get("cart_value") == "lots"]
    assert bad
    for number in bad:
        assert decisions[number - 1]["line"] == number
        assert "cart_value" in decisions[number - 1]["error"]
