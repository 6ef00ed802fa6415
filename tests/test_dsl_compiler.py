"""The compiler: rules indexed by event type, constant folding, regexes compiled once,
and the state a ruleset needs (history types, fields and windows; the contact window)."""

from __future__ import annotations

import re

import pytest

from nba.dsl import load_text
from nba.dsl import nodes as n
from nba.dsl.compiler import ANY_TYPE, LATE_EVENTS_S
from nba.dsl.folding import fold
from nba.dsl.source import Diagnostics
from nba.dsl.syntax import parse_module

from dsl_helpers import T0, engine_for, event, trace_entry

INDEXED = """
rule only_a when event.type == "a" then xa end
rule a_or_b when event.type in ["a", "b"] then xab end
rule reversed when "b" == event.type and event.n > 0 then xb end
rule either when event.type == "c" or event.type == "a" then xca end
rule untyped when event.n > 0 then xn end
rule not_a when event.type != "a" then xna end
rule typed_or_other when event.type == "d" or event.n > 5 then xd end
rule never when event.type == "a" and event.type == "b" then never end
"""


def bucket_ids(ruleset, event_type):
    return [ruleset.rules[index].id for index in ruleset.bucket(event_type).rules]


def test_rules_are_indexed_by_the_event_types_their_when_tests():
    ruleset = load_text(INDEXED)
    untyped = ["untyped", "not_a", "typed_or_other"]
    assert bucket_ids(ruleset, "a") == ["only_a", "a_or_b", "either"] + untyped
    assert bucket_ids(ruleset, "b") == ["a_or_b", "reversed"] + untyped
    assert bucket_ids(ruleset, "c") == ["either"] + untyped
    # a type no rule names gets the bucket of the rules without an event.type test
    assert bucket_ids(ruleset, "zzz") == untyped
    assert ruleset.bucket("zzz") is ruleset.buckets[ANY_TYPE]
    assert ruleset.rule("only_a").event_types == frozenset({"a"})
    assert ruleset.rule("either").event_types == frozenset({"a", "c"})
    assert ruleset.rule("untyped").event_types is None
    assert ruleset.rule("never").event_types == frozenset()


@pytest.mark.parametrize(
    "event_type, expected",
    [
        ("a", ["xa", "xab", "xca", "xn"]),
        ("b", ["xab", "xb", "xn", "xna"]),
        ("c", ["xca", "xn", "xna"]),
        ("d", ["xn", "xna", "xd"]),
        ("zzz", ["xn", "xna"]),
    ],
)
def test_an_event_gets_the_same_decision_as_without_the_index(event_type, expected):
    decision = engine_for(INDEXED).decide(event(event_type, n=1), limit=10, dry_run=True)
    assert [c.action for c in decision.choices] == expected


def test_an_event_only_runs_the_rules_of_its_bucket():
    engine = engine_for(
        """
        rule for_a when event.type == "a" and event.n > 1 then xa end
        rule for_all when event.n > 1 then x end
        """
    )
    decision = engine.decide(event("b", n="oops"), explain=True)
    # the rule for `a` events is not even looked at: no error, and not in the trace
    assert trace_entry(decision, "for_a") is None
    assert "`>`" in trace_entry(decision, "for_all").error
    decision = engine.decide(event("a", n="oops"), explain=True)
    assert trace_entry(decision, "for_a").outcome == "error"


def test_index_does_not_change_event_type_tests_inside_segments_and_priorities():
    engine = engine_for(
        """
        segment is_a = event.type == "a"
        rule r priority (if event.type == "a" then 5 else 1) when is_a or event.type == "b" then x with t = event.type end
        """
    )
    decision = engine.decide(event("a"), explain=True, dry_run=True)
    assert decision.params == {"t": "a"} and trace_entry(decision, "r").priority == 5
    decision = engine.decide(event("b"), explain=True, dry_run=True)
    assert decision.params == {"t": "b"} and trace_entry(decision, "r").priority == 1
    assert engine.decide(event("c"), dry_run=True).action is None


# ---- constant folding -----------------------------------------------------------------------


def folded(text: str, event_type: str | None = None) -> n.Expr:
    diagnostics = Diagnostics()
    module = parse_module("t.rules", f"segment s = {text}", diagnostics)
    assert not diagnostics
    return fold(module.declarations[0].condition, event_type)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1 + 2 * 3", 7),
        ("10 - 4 - 3", 3),
        ("8 / 4 / 2", 1.0),
        ("-7 % 3", 2),
        ("1 / 0", None),
        ("1h + 30m", 5400),
        ("2026-11-28 - 2026-11-27", 86400),
        ('"a" + "b"', "ab"),
        ("1 == 1.0", True),
        ('"1" == 1', False),
        ("not true", False),
        ("null + 1", None),
        ("if 1 > 2 then 3 else 4", 4),
        ("[1, 1 + 1]", [1, 2]),
        ("round(2.5)", 3),
        ('upper("a") + lower("B")', "Ab"),
        ("coalesce(null, 2)", 2),
        ("max(1, 5, 3)", 5),
        ("days(36h)", 1.5),
        ("false and event.x", False),
        ("true or event.x", True),
        ("null and event.x", False),
        ("3 in [1, 2, 3]", True),
        ('"b" in "abc"', True),
    ],
)
def test_constant_subexpressions_become_literals(text, value):
    result = folded(text)
    assert isinstance(result, n.Literal)
    assert result.value == value and type(result.value) is type(value)


def test_event_type_is_folded_in_its_bucket():
    result = folded('event.type == "a" and event.n > 1', "a")
    assert isinstance(result, n.Binary) and isinstance(result.left, n.Literal) and result.left.value is True
    assert folded('event.type == "a" and event.n > 1', "b").value is False
    assert isinstance(folded('event.type == "a"'), n.Binary)  # no bucket: not folded


def test_folding_keeps_what_is_only_known_at_decision_time():
    assert isinstance(folded("event.n + 1 * 2"), n.Binary)
    assert folded("event.n + 1 * 2").right.value == 2
    assert isinstance(folded('matches("abc", "b")'), n.Call)  # the compiled regex is used at decision time
    # a kind error is not folded away: it stays for the decision to report
    assert isinstance(folded('-"a" == 1'), n.Binary)


def test_folded_priorities_and_parameters_are_constants_of_the_rule():
    ruleset = load_text(
        """
        rule r priority 40 + 20 when true then a with v = 2 * 3, s = "x" + "y", d = 1d end
        rule s priority event.p * 2 when true then b with v = event.v end
        """
    )
    r, s = ruleset.rules
    assert (r.priority, r.priority_fn, r.params, r.params_fn) == (60, None, {"v": 6, "s": "xy", "d": 86400}, None)
    assert s.priority is None and s.priority_fn is not None and s.params is None and s.params_fn is not None


def test_a_rule_whose_when_folds_to_false_never_matches():
    engine = engine_for("rule r when 1 + 1 == 3 and event.n.x.y > 0 then a end\nrule s when true then b end")
    decision = engine.decide(event(n="not a map"), explain=True, dry_run=True)
    assert decision.action == "b"
    assert trace_entry(decision, "r").outcome == "not_matched"


# ---- regexes -------------------------------------------------------------------------------


def test_each_regex_is_compiled_once_when_loading_not_when_deciding(monkeypatch):
    engine = engine_for(
        """
        rule a priority 3 when matches(event.s, "^ab+c$") then x end
        rule b priority 2 when matches(event.s, "^ab+c$") and true then y end
        rule c priority 1 when matches(event.s, "d") then z end
        """
    )
    source = engine.ruleset.python_source
    assert set(re.findall(r"_RX\d+", source)) == {"_RX0", "_RX1"}  # one constant per distinct pattern

    def no_compiling(*args, **kwargs):
        raise AssertionError("a regex was compiled at decision time")

    monkeypatch.setattr(re, "compile", no_compiling)
    monkeypatch.setattr(re, "search", no_compiling)
    monkeypatch.setattr(re, "match", no_compiling)
    decision = engine.decide(event(s="abbbc"), limit=3, dry_run=True)
    assert [c.action for c in decision.choices] == ["x", "y"]
    assert engine.decide(event(s="xdx"), dry_run=True).action == "z"


# ---- what the ruleset needs from the state -----------------------------------------------------


def test_history_needs_types_fields_and_longest_window():
    ruleset = load_text(
        """
        segment frequent = count(view within 2h) > 3
        rule a when count(purchase within 24h) == 0 and frequent then x end
        rule b priority sum(purchase.amount within 7d) when true then y with
          d = distinct(view.item.sku where category == event.category within 30m),
          m = max(purchase.amount where coupon != null and time > 0 and type == "purchase" within 1w)
        end
        on login when since(view within 3d) > 0 set seen = true end
        """
    )
    needs = ruleset.needs.history
    assert set(needs) == {"view", "purchase"}
    # top-level fields read by the aggregates and their `where`s, sorted; `time` and `type` are always there
    assert needs["view"].fields == ("category", "item")
    assert needs["purchase"].fields == ("amount", "coupon")
    # the longest window per type is read; it is kept with the allowance for late events
    assert (needs["view"].window, needs["view"].keep) == (3 * 86400, 3 * 86400 + LATE_EVENTS_S)
    assert (needs["purchase"].window, needs["purchase"].keep) == (7 * 86400, 7 * 86400 + LATE_EVENTS_S)
    assert ruleset.needs.contact_window == 0


def test_no_aggregates_no_history():
    ruleset = load_text("rule r when event.n > 1 then a end")
    assert ruleset.needs.history == {}
    assert ruleset.needs.contact_window == 0


def test_the_contact_window_is_the_longest_cap_or_policy():
    ruleset = load_text(
        """
        policy email: cap 2 per 7d
        policy all: cap 4 per 1d
        rule r when true then a cap 1 per 24h end
        rule s when true then b cap 3 per 2w end
        """
    )
    assert ruleset.needs.contact_window == 14 * 86400  # what a decision reads
    assert ruleset.needs.contact_keep == 2 * (14 * 86400 + LATE_EVENTS_S)  # what is kept, late events' slack too
    assert load_text("policy all: cap 1 per 30m").needs.contact_window == 1800


def test_needs_carry_the_profile_schema():
    ruleset = load_text("profile { tier: string, seen: time }\nrule r when true then a end")
    assert ruleset.needs.profile_schema == {"tier": "string", "seen": "time"}


def test_only_the_needed_event_types_and_fields_are_kept():
    engine = engine_for(
        'rule r when event.type == "check" then a with s = sum(buy.amount within 1h), n = count(buy within 1h) end'
    )
    engine.decide(event("buy", time=T0 - 10, amount=5, secret="not kept", item={"a": 1}))
    engine.decide(event("view", time=T0 - 5, amount=7))  # a type no aggregate reads
    assert engine.store.history_sizes("c1") == {"buy": 1}
    state = engine.store.read("c1", engine.ruleset.needs, T0)
    assert set(state.history["buy"].columns) == {"amount"}
    assert engine.decide(event("check"), dry_run=True).params == {"s": 5, "n": 1}


def test_history_older_than_the_longest_window_is_not_kept():
    engine = engine_for('rule r when event.type == "check" then a with n = count(buy within 1h) end')
    for seconds_ago in (7200, 3950, 3700, 100, 0):  # kept: 1h plus the late-event allowance
        engine.decide(event("buy", time=T0 - seconds_ago))
    assert engine.store.history_sizes("c1") == {"buy": 3}


def test_aggregates_in_the_default_and_in_sets_are_needs_too():
    ruleset = load_text(
        "default d with n = count(buy within 2d), s = sum(view.price within 1h)\non x set y = max(buy.amount within 3d) end"
    )
    assert {t: (need.fields, need.window, need.keep) for t, need in ruleset.needs.history.items()} == {
        "buy": (("amount",), 3 * 86400.0, 3 * 86400.0 + LATE_EVENTS_S),
        "view": (("price",), 3600.0, 3600.0 + LATE_EVENTS_S),
    }


def test_long_or_and_and_chains_load_and_keep_their_meaning():
    n = 2000
    anyof = " or ".join(f"event.x == {i}" for i in range(n))
    allof = " and ".join(f"event.y != {i}" for i in range(n))
    engine = engine_for(f'rule r when event.type == "a" and ({anyof}) then r end\nrule s when {allof} then s end')
    assert engine.ruleset.rule("r").event_types == frozenset({"a"})
    assert [c.rule for c in engine.decide(event("a", x=n - 1, y=5), limit=2).choices] == ["r"]
    assert [c.rule for c in engine.decide(event("a", x=n, y=-1), limit=2).choices] == ["s"]
    # still left to right, stopping at the first operand that decides: no error from the third
    decision = engine_for("rule r when event.a or event.b or event.c then r end").decide(event(a=False, b=True, c=5))
    assert decision.action == "r"


def test_an_expression_too_deep_to_load_is_a_load_error_not_a_crash():
    from nba.dsl import LoadError

    chain = " + ".join(f"event.x{i}" for i in range(1000))
    with pytest.raises(LoadError) as info:
        load_text(f"rule r when {chain} > 0 then a end", "deep.rules")
    (error,) = info.value.diagnostics
    assert (error.pos.path, error.pos.line, error.pos.column) == ("deep.rules", 1, 1)
    assert "nested too deeply" in error.message and "`in [...]`" in error.message
