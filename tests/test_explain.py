"""Explanations: each condition with its text, place and value; the values read; caps and holdouts."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from nba.engine.explain_view import render

from dsl_helpers import T0, engine_for, event

CART = """
profile { email_opt_in: bool }
segment email_ok = profile.email_opt_in
rule cart_email
  priority 80
  when event.type == "cart"
   and event.value > 50
   and email_ok
   and count(purchase within 24h) == 0
  then reminder via email
end
"""


def entry(decision, rule):
    return next(e for e in decision.to_dict()["trace"] if e["rule"] == rule)


def test_every_condition_is_evaluated_with_its_text_place_and_value():
    engine = engine_for(CART)
    traced = entry(engine.decide(event("cart", value=80), explain=True, dry_run=True), "cart_email")
    assert traced["outcome"] == "not_matched"
    assert [(c["text"], c["value"]) for c in traced["conditions"]] == [
        ('event.type == "cart"', True),
        ("event.value > 50", True),
        ("email_ok", False),  # the first false one
        ("count(purchase within 24h) == 0", True),  # evaluated all the same
    ]
    assert [c["at"] for c in traced["conditions"]] == [
        "test.rules:6:8",
        "test.rules:7:8",
        "test.rules:8:8",
        "test.rules:9:8",
    ]
    assert traced["values"] == {
        "event.type": "cart",
        "event.value": 80,
        "email_ok": False,
        "count(purchase within 24h)": 0,
        "profile.email_opt_in": None,  # read through the segment: why it is false
    }


def test_a_condition_that_fails_at_decision_time_is_null_with_its_error():
    engine = engine_for('rule r\n  when event.type == "x" and event.n > 1 and event.s > 3\n  then a\nend\n')
    traced = entry(engine.decide(event("x", n=5, s="text"), explain=True, dry_run=True), "r")
    values = [c["value"] for c in traced["conditions"]]
    assert values == [True, True, None]
    assert "error" in traced["conditions"][2] and traced["outcome"] == "error"


def test_a_when_without_and_is_one_condition():
    engine = engine_for('rule r\n  when event.type == "x" or event.n > 1\n  then a\nend\n')
    traced = entry(engine.decide(event("x"), explain=True, dry_run=True), "r")
    assert [c["text"] for c in traced["conditions"]] == ['event.type == "x" or event.n > 1']


def test_a_capped_rule_shows_the_count_it_saw():
    engine = engine_for('rule r\n  when event.type == "x"\n  then a via email\n  cap 2 per 1d\nend\n')
    for offset in (0, 10):
        engine.decide(event("x", time=T0 + offset))
    traced = entry(engine.decide(event("x", time=T0 + 20), explain=True, dry_run=True), "r")
    assert traced["outcome"] == "passed_over" and traced["reason"] == "cap"
    assert traced["cap"] == {"limit": 2, "count": 2, "per": 86400.0}


def test_a_policy_counts_what_this_decision_chose_above_the_rule():
    text = (
        "policy email: cap 1 per 1d\n"
        'rule a\n  priority 2\n  when event.type == "x"\n  then first via email\nend\n'
        'rule b\n  priority 1\n  when event.type == "x"\n  then second via email\nend\n'
    )
    decision = engine_for(text).decide(event("x"), limit=2, explain=True, dry_run=True)
    traced = entry(decision, "b")
    assert traced["reason"].startswith("policy email") and traced["cap"] == {"limit": 1, "count": 1, "per": 86400.0}


def test_a_held_out_customer_shows_the_bucket():
    engine = engine_for('rule r\n  when event.type == "x"\n  then a\n  holdout 100%\nend\n')
    traced = entry(engine.decide(event("x"), explain=True, dry_run=True), "r")
    assert traced["reason"] == "holdout"
    assert traced["holdout"]["percent"] == 100 and 0 <= traced["holdout"]["bucket"] < 100


def test_an_inactive_rule_has_no_conditions():
    engine = engine_for('rule r\n  when event.type == "x"\n  then a\n  active from 2030-01-01\nend\n')
    traced = entry(engine.decide(event("x"), explain=True, dry_run=True), "r")
    assert traced["outcome"] == "inactive" and "conditions" not in traced


def test_an_explanation_never_changes_the_decision():
    engine = engine_for(CART)
    engine.put_profile("c1", {"email_opt_in": True})
    explained = engine.decide(event("cart", value=80), explain=True, dry_run=True).to_dict()
    plain = engine.decide(event("cart", value=80), dry_run=True).to_dict()
    explained.pop("trace")
    assert explained == plain


def test_the_terminal_tree_marks_each_condition():
    engine = engine_for(CART)
    text = render(engine.decide(event("cart", value=80), explain=True, dry_run=True).to_dict())
    assert "✗ cart_email  not matched" in text
    assert "✗ email_ok" in text and '✓ event.type == "cart"' in text
    assert "profile.email_opt_in = null" in text


def test_nba_decide_prints_json_when_not_on_a_terminal(tmp_path):
    rules = tmp_path / "cart.rules"
    rules.write_text(CART, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nba.engine.cli",
            "decide",
            str(rules),
            "--explain",
            "--event",
            json.dumps({"customer_id": "c1", "type": "cart", "value": 80}),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    trace = json.loads(done.stdout)["trace"]
    assert trace[0]["conditions"][2] == {"text": "email_ok", "at": f"{rules}:8:8", "value": False}


# ---- explanations agree with decisions, on generated rules and events ---------------------

FIELDS = ("a", "b", "s", "flag")
VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", "y", "3"]), st.booleans())


@st.composite
def atoms(draw):
    field = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["cmp", "eq", "in", "bare", "not"]))
    if kind == "cmp":
        return f"event.{field} {draw(st.sampled_from(['<', '<=', '>', '>=']))} {draw(st.integers(-3, 3))}"
    if kind == "eq":
        value = draw(st.sampled_from(['"x"', "1", "null", "true"]))
        return f"event.{field} {draw(st.sampled_from(['==', '!=']))} {value}"
    if kind == "in":
        return f'event.{field} {draw(st.sampled_from(["in", "not in"]))} ["x", 1, 2]'
    if kind == "not":
        return f"not (event.{field} == 1)"
    return f"event.{field}"  # a bare field: a kind error unless a bool or null


@st.composite
def whens(draw):
    parts = draw(st.lists(atoms(), min_size=1, max_size=5))
    if draw(st.booleans()) and len(parts) > 1:  # an `or` inside one operand
        parts[0] = f"({parts[0]} or {parts.pop(1)})"
    return " and ".join(parts)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(when=whens(), fields=st.fixed_dictionaries({name: VALUES for name in FIELDS}))
def test_the_conditions_agree_with_the_match(when, fields):
    engine = engine_for(f'rule r\n  when event.type == "x" and {when}\n  then a\nend\n')
    traced = entry(engine.decide(event("x", **fields), explain=True, dry_run=True), "r")
    values = [c["value"] for c in traced["conditions"]]
    if all(value is True for value in values):
        assert traced["matched"] and traced["outcome"] == "chosen", (when, fields, traced)
    else:
        assert not traced["matched"], (when, fields, traced)
    if traced["outcome"] == "error":  # a failing operand shows its error
        assert any("error" in c for c in traced["conditions"]), traced
