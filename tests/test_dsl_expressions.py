"""DSL.md, "Expressions": operators, precedence, null, kinds, durations and times.

Each table runs twice where it matters: with literals (folded when the rules load) and
with the same values arriving as event fields (computed by the generated code), since
both must mean the same thing.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import LoadError

from dsl_helpers import EvalFailed, engine_for, evaluate, event, holds, only_error, trace_entry

# ---- precedence and associativity ----------------------------------------------------------

TRUE_WITH_LITERALS = [
    # binary operators of one level group left to right
    "10 - 4 - 3 == 3",
    "8 / 4 / 2 == 1",
    "100 / 10 * 2 == 20",
    "2 * 9 % 4 == 2",
    "17 % 5 * 2 == 4",
    "1 + 2 - 3 + 4 == 4",
    # * / % bind tighter than + -
    "2 + 3 * 4 == 14",
    "2 * 3 + 4 == 10",
    "10 - 6 / 2 == 7",
    "1 + 7 % 4 == 4",
    # parentheses group
    "(2 + 3) * 4 == 20",
    "10 - (4 - 3) == 9",
    "8 / (4 / 2) == 4",
    # unary minus binds tighter than * and applies to parenthesised groups
    "-2 * 3 == -6",
    "- 2 - -3 == 1",
    "-(2 + 3) == -5",
    "--4 == 4",
    "2 - -2 == 4",
    # arithmetic binds tighter than comparisons, comparisons tighter than not/and/or
    "1 + 1 == 2",
    "not 1 == 2",
    "not false and false == false",
    "true or false and false",
    "not true or true",
    "(true or false) and true",
    "not (true and false)",
    # `in` and `not in` are comparisons: looser than arithmetic
    "1 + 1 in [2, 3]",
    "1 + 2 not in [1, 2]",
    # if/then/else is the loosest: its branches take whole expressions
    "(if 1 > 2 then 10 else 20 + 1) == 21",
    "(if true then 1 + 1 else 0) == 2",
    "(if false then 1 else if true then 2 else 3) == 2",
    "2 * (if true then 3 else 4) == 6",
    "if true then true else false",
    # member access and calls bind tightest
    "-abs(-3) == -3",
    "abs(-3) * 2 == 6",
    # list literals
    "[1, 2, 3] == [1, 2, 3]",
    "[] == []",
    "len([]) == 0",
    "[1, [2, 3]] == [1, [2, 3]]",
    "[1, 2] != [2, 1]",
    '[1, "a", null, true] == [1, "a", null, true]',
]


@pytest.mark.parametrize("condition", TRUE_WITH_LITERALS)
def test_precedence_and_associativity_with_literals(condition):
    assert holds(condition)


TRUE_WITH_FIELDS = [
    ("event.a - event.b - event.c == 3", {"a": 10, "b": 4, "c": 3}),
    ("event.a / event.b / event.c == 1", {"a": 8, "b": 4, "c": 2}),
    ("event.a / event.b * event.c == 20", {"a": 100, "b": 10, "c": 2}),
    ("event.a + event.b * event.c == 14", {"a": 2, "b": 3, "c": 4}),
    ("(event.a + event.b) * event.c == 20", {"a": 2, "b": 3, "c": 4}),
    ("-event.a * event.b == -6", {"a": 2, "b": 3}),
    ("event.a - -event.b == 4", {"a": 2, "b": 2}),
    ("not event.f and event.f == false", {"f": False}),
    ("event.t or event.f and event.f", {"t": True, "f": False}),
    ("(if event.a > event.b then 10 else event.c + 1) == 21", {"a": 1, "b": 2, "c": 20}),
    ("event.a + 1 in [2, 3]", {"a": 1}),
    ("event.a not in [1, 2]", {"a": 3}),
    ("[event.a, event.b] == [1, 2]", {"a": 1, "b": 2.0}),
]


@pytest.mark.parametrize("condition, fields", TRUE_WITH_FIELDS)
def test_precedence_and_associativity_with_fields(condition, fields):
    assert holds(condition, **fields)


def test_if_inside_arithmetic_needs_parentheses():
    error = only_error("rule r when 1 + if true then 1 else 2 > 0 then a end")
    assert "parentheses" in error.message
    assert (error.pos.line, error.pos.column) == (1, 17)


# ---- member access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("event.a.b.c", 5),
        ("event.a.b", {"c": 5}),
        ("event.a.x", None),
        ("event.a.x.c", None),  # a.b where a is null: null
        ("event.s.b", None),  # a.b where a is not a map: null
        ("event.n.b", None),
        ("event.l.b", None),
        ("event.missing", None),
        ("event.missing.deeper", None),
        ("profile.p.q", 7),
        ("profile.missing.q", None),
        ("coalesce(event.a, 1).b.c", 5),  # member access on any value
    ],
)
def test_member_access_into_nested_maps(expr, expected):
    fields = {"a": {"b": {"c": 5}}, "s": "text", "n": 3, "l": [1]}
    assert evaluate(expr, profile={"p": {"q": 7}}, **fields) == expected


def test_member_access_on_a_value_known_not_to_be_a_map_is_a_load_error():
    # The engine's choice: `a.b` on a non-map is null at decision time, but where the
    # kind is known when the rules load (a literal, a schema field) it is a load error.
    assert "has no field" in only_error("rule r when true then a with v = [1].b end").message
    error = only_error("profile { tier: string }\nrule r when profile.tier.name == 1 then a end")
    assert "`profile.tier` is a string" in error.message


@pytest.mark.parametrize(
    "word",
    "rule segment policy on set when then via with priority cap per holdout active from to end "
    "and or not in within where if else true false null default profile event all".split(),
)
def test_reserved_words_are_field_names_after_a_dot(word):
    assert evaluate(f"event.{word}", fields={word: "x"}) == "x"
    assert evaluate(f"event.m.{word}", m={word: 1}) == 1
    assert evaluate(f"profile.{word}", profile={word: 2}) == 2


def test_builtin_event_fields():
    assert evaluate("event.type") == "ping"
    assert evaluate("event.customer_id") == "c1"
    assert evaluate("event.time", time=1_800_000_000) == 1_800_000_000
    assert evaluate("event.time", time="2026-11-27T00:00:00Z") == 1_795_737_600


def test_profile_is_the_profile_before_the_event():
    engine = engine_for(
        """
        on ping set n = coalesce(profile.n, 0) + 1 end
        rule r when true then a with seen = profile.n end
        """
    )
    assert engine.decide(event()).params == {"seen": None}
    assert engine.decide(event()).params == {"seen": 1}
    assert engine.get_profile("c1") == {"n": 2}


# ---- values and kinds ----------------------------------------------------------------------

VALUES = [
    # == and != compare any two values; different kinds are unequal
    ("1 == 1.0", True),
    ("1.0 == 1", True),
    ('"1" == 1', False),
    ("true == 1", False),
    ("false == 0", False),
    ("null == null", True),
    ("null == false", False),
    ("null == 0", False),
    ('null == ""', False),
    ('"a" == "a"', True),
    ('"a" != "A"', True),
    ("[1, 2] == [1.0, 2]", True),
    ("[1] == 1", False),
    ("[true] == [1]", False),
    # strings compare by Unicode code points
    ('"B" < "a"', True),
    ('"Z" < "a"', True),
    ('"é" > "z"', True),
    ('"ab" < "b"', True),
    ('"a" < "ab"', True),
    ('"" < "a"', True),
    ('"abc" <= "abc"', True),
    ('"abc" >= "abd"', False),
    # numbers
    ("1 < 2", True),
    ("2 <= 2.0", True),
    ("2.5 > 2", True),
    ("3 >= 4", False),
    ("1 != 2", True),
    # in / not in: membership in a list (by ==) or a substring
    ("3 in [1, 2, 3]", True),
    ("1.0 in [1, 2, 3]", True),
    ('"1" in [1, 2, 3]', False),
    ("4 in [1, 2, 3]", False),
    ("4 not in [1, 2, 3]", True),
    ("3 not in [1, 2, 3]", False),
    ("[1] in [[1], [2]]", True),
    ('"a" in []', False),
    ('"a" not in []', True),
    ('"b" in "abc"', True),
    ('"bc" in "abc"', True),
    ('"d" in "abc"', False),
    ('"d" not in "abc"', True),
    ('"" in "abc"', True),
    ('"B" in "abc"', False),
    # arithmetic
    ("7 / 2", 3.5),
    ("1 / 4", 0.25),
    ("-7 % 3", 2),
    ("7 % -3", -2),
    ("7 % 3", 1),
    ("5.5 % 2", 1.5),
    ("1 / 0", None),
    ("0 / 0", None),
    ("5 % 0", None),
    ("5.5 % 0.0", None),
    ("2 * 3.5", 7.0),
    ('"ab" + "cd"', "abcd"),
    ('"" + ""', ""),
    ("-(3)", -3),
    ("-(-2.5)", 2.5),
    # durations are numbers of seconds
    ("1s", 1),
    ("30m", 1800),
    ("1h", 3600),
    ("24h", 86400),
    ("7d", 604800),
    ("2w", 1209600),
    ("1h + 30m", 5400),
    ("1h == 3600", True),
    ("1d == 24h", True),
    ("1w == 7d", True),
    # times are numbers: seconds since the epoch, no zone = UTC
    ("2026-11-27", 1_795_737_600),
    ("2026-11-27T09:30:00Z", 1_795_771_800),
    ("2026-11-27T09:30:00", 1_795_771_800),
    ("2026-11-27T09:30:00+01:00", 1_795_768_200),
    ("2026-11-27T00:00:00Z == 2026-11-27", True),
    ("2026-11-28 - 2026-11-27 == 1d", True),
    ("1970-01-01", 0),
    ("2026-11-27T09:30:00Z > 2026-11-27", True),
]


@pytest.mark.parametrize("expr, expected", VALUES)
def test_values_with_literals(expr, expected):
    value = evaluate(expr)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "expr, fields, expected",
    [
        ("event.a == event.b", {"a": 1, "b": 1.0}, True),
        ("event.a == event.b", {"a": "1", "b": 1}, False),
        ("event.a == event.b", {"a": True, "b": 1}, False),
        ("event.a == 1", {"a": True}, False),
        ("event.a == 1", {"a": 1.0}, True),
        ("event.a == 1", {"a": "1"}, False),
        ("event.a != 1", {"a": True}, True),
        ("event.a == true", {"a": 1}, False),
        ('event.a == "x"', {"a": "x"}, True),
        ("event.a == event.b", {"a": {"k": [1]}, "b": {"k": [1.0]}}, True),
        ("event.a == event.b", {"a": {"k": 1}, "b": {"k": 1, "j": 2}}, False),
        ("event.a < event.b", {"a": "B", "b": "a"}, True),
        ('event.a < "a"', {"a": "B"}, True),
        ('event.a > "z"', {"a": "é"}, True),
        ("event.a < 2", {"a": 1.5}, True),
        ("event.a in [1, 2]", {"a": 2.0}, True),
        ('event.a in ["x", "y"]', {"a": "y"}, True),
        ('event.a in ["x", "y"]', {"a": 1}, False),
        ("event.a in event.b", {"a": "b", "b": "abc"}, True),
        ("event.a not in event.b", {"a": "z", "b": "abc"}, True),
        ("event.a in event.b", {"a": [1], "b": [[1.0]]}, True),
        ("event.a / event.b", {"a": 7, "b": 2}, 3.5),
        ("event.a / event.b", {"a": 6, "b": 3}, 2.0),
        ("event.a / event.b", {"a": 1, "b": 0}, None),
        ("event.a % event.b", {"a": -7, "b": 3}, 2),
        ("event.a % event.b", {"a": 1, "b": 0}, None),
        ("event.a + event.b", {"a": "ab", "b": "cd"}, "abcd"),
        ("event.a + 1", {"a": 1.5}, 2.5),
        ("event.a * 2", {"a": 3}, 6),
        ("event.a - 1", {"a": 3}, 2),
        ("-event.a", {"a": 3}, -3),
    ],
)
def test_values_with_fields(expr, fields, expected):
    value = evaluate(expr, **fields)
    assert value == expected and type(value) is type(expected)


def test_slash_always_gives_a_fractional_number():
    assert type(evaluate("6 / 3")) is float
    assert type(evaluate("event.a / event.b", a=6, b=3)) is float


def test_strings_and_escapes():
    assert evaluate(r'"say \"hi\""') == 'say "hi"'
    assert evaluate(r'"back\\slash"') == "back\\slash"
    assert evaluate(r'"line\nbreak\ttab"') == "line\nbreak\ttab"
    assert evaluate('"# not a comment"') == "# not a comment"
    assert evaluate('"héllo ✓"') == "héllo ✓"


def test_numbers():
    assert evaluate("42") == 42 and type(evaluate("42")) is int
    assert evaluate("3.5") == 3.5
    assert evaluate("0.25") == 0.25


def test_comments_and_whitespace_are_insignificant():
    engine = engine_for(
        "# a comment line\n"
        "rule r   # after the id\n"
        "\twhen\n\n   1 +\n 1 == 2 # inside the condition\n"
        '  then a with v = "#" # after a string holding a hash\n'
        "end # the end\n"
    )
    assert engine.decide(event(), dry_run=True).params == {"v": "#"}


# ---- null ---------------------------------------------------------------------------------

NULLS = [
    # a comparison, `in` or `not in` with a null operand is false ...
    ("event.x < 1", False),
    ("event.x <= 1", False),
    ("event.x > 1", False),
    ("event.x >= 1", False),
    ("1 > event.x", False),
    ('event.x < "a"', False),
    ("event.x in [1, null]", False),
    ("event.x not in [1]", False),
    ("1 in event.x", False),
    ("1 not in event.x", False),
    ('"a" in event.x', False),
    ('"a" not in event.x', False),
    ("null < 1", False),
    ("null in [null]", False),
    ("null not in [1]", False),
    # ... except == null and != null
    ("event.x == null", True),
    ("null == event.x", True),
    ("event.x != null", False),
    ("event.y == null", False),
    ("event.y != null", True),
    ("event.x == event.z", True),  # two nulls are equal
    # == and != compare any two values: a null is unequal to every non-null value
    ("event.x == 1", False),
    ("event.x != 1", True),
    ('event.x != "a"', True),
    ("event.x == false", False),
    # null counts as false in and, or, not and when
    ("event.x", False),
    ("event.x and true", False),
    ("true and event.x", False),
    ("event.x or true", True),
    ("event.x or event.z", False),
    ("not event.x", True),
    ("not not event.x", False),
    ("(if event.x then false else true)", True),
    # functions given null return null: false in a condition
    ("lower(event.x) == null", True),
    ('starts_with(event.x, "a")', False),
    ('not starts_with(event.x, "a")', True),
    ("contains(event.x, 1)", False),
    ('matches(event.x, "a")', False),
]


@pytest.mark.parametrize("condition, expected", NULLS)
def test_null_in_conditions(condition, expected):
    assert holds(condition, y=1) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "event.x + 1",
        "1 + event.x",
        "event.x - 1",
        "event.x * 2",
        "event.x / 2",
        "2 / event.x",
        "event.x % 2",
        "-event.x",
        'event.x + "a"',
        "null + 1",
        "-null",
        "event.x.y",
        "null * null",
    ],
)
def test_arithmetic_with_null_is_null(expr):
    assert evaluate(expr) is None


def test_a_missing_field_is_null():
    assert evaluate("event.nothing") is None
    assert evaluate("profile.nothing") is None
    assert evaluate("event.x", x=None) is None


# ---- decision-time kind errors -------------------------------------------------------------

KIND_ERRORS = [
    ("event.s < 1", {"s": "a"}, "`<`"),
    ("event.s >= event.n", {"s": "a", "n": 1}, "`>=`"),
    ("event.l > 1", {"l": [1]}, "`>`"),
    ("event.s + 1 > 0", {"s": "a"}, "`+`"),
    ("event.s + event.n == 0", {"s": "a", "n": 1}, "`+`"),
    ("event.b * 2 > 0", {"b": True}, "`*`"),
    ("event.s - 1 > 0", {"s": "a"}, "`-`"),
    ("event.s / 1 > 0", {"s": "a"}, "`/`"),
    ("event.s % 1 > 0", {"s": "a"}, "`%`"),
    ("-event.s == 0", {"s": "a"}, "`-`"),
    ("1 in event.n", {"n": 5}, "`in`"),
    ("event.n in event.s", {"n": 5, "s": "abc"}, "`in`"),
    ("event.n not in event.s", {"n": 5, "s": "abc"}, "`in`"),
    # a `when`, `if`, `and`, `or` or `not` operand that is not a bool (nor null)
    ("event.n", {"n": 1}, "`when`"),
    ("event.s", {"s": "yes"}, "`when`"),
    ("event.n and true", {"n": 1}, "`and`"),
    ("true and event.n", {"n": 1}, "`and`"),
    ("event.n or false", {"n": 0}, "`or`"),
    ("not event.s", {"s": "a"}, "`not`"),
    ("(if event.n then true else false)", {"n": 1}, "`if`"),
    ('lower(event.n) == "a"', {"n": 1}, "`lower`"),
]


@pytest.mark.parametrize("condition, fields, words", KIND_ERRORS)
def test_decision_time_kind_errors(condition, fields, words):
    with pytest.raises(EvalFailed) as info:
        holds(condition, **fields)
    assert words in str(info.value)


def test_and_or_short_circuit_before_a_kind_error():
    assert holds("event.f and event.n", f=False, n=1) is False
    assert holds("event.t or event.n", t=True, n=1) is True
    assert holds("event.x and event.n", n=1) is False  # null is false: the right side is not looked at
    assert evaluate("if true then 1 else -event.s", s="a") == 1


def test_a_kind_error_only_stops_its_own_rule():
    rules = """
        rule broken priority 9 when event.s < 1 then first end
        rule fine priority 1 when true then second with v = 1 end
        """
    decision = engine_for(rules).decide(event(s="a"), explain=True)
    assert decision.action == "second" and decision.params == {"v": 1}
    broken = trace_entry(decision, "broken")
    assert broken.outcome == "error"
    assert "`<`" in broken.error and "a string" in broken.error and "a number" in broken.error
    # nothing else in the decision changes: it is the decision of the ruleset without that rule
    without = engine_for(rules.replace("event.s < 1", "false")).decide(event(s="a"))
    assert engine_for(rules).decide(event(s="a")).to_dict() == without.to_dict()


def test_a_kind_error_in_a_parameter_means_the_rule_does_not_match():
    engine = engine_for(
        """
        rule bad_param priority 9 when true then first with v = event.s * 2 end
        rule fine priority 1 when true then second end
        """
    )
    decision = engine.decide(event(s="a"), explain=True)
    assert decision.action == "second"
    assert trace_entry(decision, "bad_param").outcome == "error"
    assert "`*`" in trace_entry(decision, "bad_param").error


@pytest.mark.parametrize(
    "priority, fields, words",
    [
        ("event.p", {}, "null"),
        ("event.p", {"p": "high"}, "string"),
        ("event.p", {"p": True}, "bool"),
        ("event.p", {"p": [1]}, "list"),
        ("event.p * 2", {"p": "x"}, "`*`"),
        ("10 / event.p", {"p": 0}, "null"),
    ],
)
def test_a_priority_that_is_not_a_number_makes_the_rule_no_candidate(priority, fields, words):
    engine = engine_for(
        f"""
        rule odd priority {priority} when true then first end
        rule other priority -5 when true then second end
        """
    )
    decision = engine.decide(event(**fields), explain=True, limit=2)
    assert [c.rule for c in decision.choices] == ["other"]
    entry = trace_entry(decision, "odd")
    assert entry.outcome == "error" and words in entry.error


def test_priority_depends_on_the_event_and_ties_go_to_declaration_order():
    engine = engine_for(
        """
        rule low priority event.p when true then a end
        rule mid priority 5 when true then b end
        rule tie priority 5 when true then c end
        rule none when true then d end
        rule negative priority -1 when true then e end
        """
    )
    choices = engine.decide(event(p=7), limit=5, dry_run=True).choices
    assert [c.rule for c in choices] == ["low", "mid", "tie", "none", "negative"]
    choices = engine.decide(event(p=2.5), limit=5, dry_run=True).choices
    assert [c.rule for c in choices] == ["mid", "tie", "low", "none", "negative"]


# ---- a reference model of DSL.md's value rules, against the engine ------------------------------
#
# Random expressions over random values, evaluated by the engine three ways (the values as
# literals, folded when loading; as event fields, through the generated code; a mix, which
# takes the code's inline fast paths) and by a small model written from DSL.md alone.


class ModelError(Exception):
    """A kind error in the model: the engine must report a decision-time error."""


def model_kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "list" if isinstance(v, list) else "map"


def model_eq(a, b):
    if model_kind(a) != model_kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(model_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(model_eq(a[k], b[k]) for k in a)
    return a == b


def model_truth(v):
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    raise ModelError


def model_number(*values):
    for v in values:
        if model_kind(v) != "number":
            raise ModelError


def model_binary(op, a, b):
    if op in ("==", "!="):
        return model_eq(a, b) == (op == "==")
    if op in ("<", "<=", ">", ">="):
        if a is None or b is None:
            return False
        if {model_kind(a), model_kind(b)} not in ({"number"}, {"string"}):
            raise ModelError
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op in ("in", "not in"):
        if a is None or b is None:
            return False
        if isinstance(b, list):
            found = any(model_eq(a, item) for item in b)
        elif isinstance(b, str) and isinstance(a, str):
            found = a in b
        else:
            raise ModelError
        return found == (op == "in")
    if a is None or b is None:
        return None
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    model_number(a, b)
    if op in ("/", "%") and b == 0:
        return None
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "%": lambda: a % b}[op]()


def model_round(x, digits=0):
    digits = int(digits)  # the engine's choice: fractional digits are cut to a whole number
    value = Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return int(value) if digits <= 0 else float(value)


def model_call(name, args):
    if name == "coalesce":
        return next((a for a in args if a is not None), None)
    if any(a is None for a in args):
        return None
    first = args[0]
    if name in ("lower", "upper"):
        if not isinstance(first, str):
            raise ModelError
        return first.lower() if name == "lower" else first.upper()
    if name == "len":
        if model_kind(first) not in ("string", "list", "map"):
            raise ModelError
        return len(first)
    if name == "contains":
        if isinstance(first, list):
            return any(model_eq(item, args[1]) for item in first)
        if isinstance(first, str) and isinstance(args[1], str):
            return args[1] in first
        raise ModelError
    if name in ("starts_with", "ends_with"):
        if not (isinstance(first, str) and isinstance(args[1], str)):
            raise ModelError
        return first.startswith(args[1]) if name == "starts_with" else first.endswith(args[1])
    model_number(*args)
    if name == "round":
        return model_round(*args)
    return {
        "abs": lambda: abs(first),
        "min": lambda: min(args),
        "max": lambda: max(args),
        "floor": lambda: math.floor(first),
        "ceil": lambda: math.ceil(first),
        "days": lambda: first / 86400,
    }[name]()


def model(tree):
    kind = tree[0]
    if kind == "leaf":
        return tree[1]
    if kind == "bin":
        op = tree[1]
        if op in ("and", "or"):
            left = model_truth(model(tree[2]))
            if left == (op == "or"):
                return left
            return model_truth(model(tree[3]))
        return model_binary(op, model(tree[2]), model(tree[3]))
    if kind == "un":
        value = model(tree[2])
        if tree[1] == "not":
            return not model_truth(value)
        if value is None:
            return None
        model_number(value)
        return -value
    if kind == "if":
        return model(tree[2]) if model_truth(model(tree[1])) else model(tree[3])
    if kind == "list":
        return [model(tree[1]), model(tree[2])]
    if kind == "member":
        target = model(tree[2])
        return target.get(tree[1]) if isinstance(target, dict) else None
    return model_call(tree[1], [model(arg) for arg in tree[2:]])


LEAF_VALUES = [
    None,
    True,
    False,
    0,
    1,
    2,
    -3,
    0.5,
    -1.5,
    2.0,
    2.5,
    "a",
    "B",
    "",
    "ab",
    [1],
    ["a"],
    [],
    [1, "a"],
    {"k": 1},
    {"k": "a", "j": [1.0]},
]
OPERATORS = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]
ONE_ARGUMENT = ["abs", "len", "lower", "upper", "floor", "ceil", "round", "days", "coalesce"]
TWO_ARGUMENTS = ["coalesce", "min", "max", "contains", "starts_with", "ends_with", "round"]


def expression_trees():
    leaf = st.tuples(st.just("leaf"), st.sampled_from(LEAF_VALUES), st.booleans())

    def extend(children):
        return st.one_of(
            st.tuples(st.just("bin"), st.sampled_from(OPERATORS), children, children),
            st.tuples(st.just("un"), st.sampled_from(["-", "not"]), children),
            st.tuples(st.just("if"), children, children, children),
            st.tuples(st.just("call"), st.sampled_from(ONE_ARGUMENT), children),
            st.tuples(st.just("call"), st.sampled_from(TWO_ARGUMENTS), children, children),
            st.tuples(st.just("list"), children, children),
            st.tuples(st.just("member"), st.sampled_from(["k", "j"]), children),
        )

    return st.recursive(leaf, extend, max_leaves=5)


def literal_text(v):
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, (int, float)):
        return f"({v!r})" if v < 0 else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(literal_text(x) for x in v) + "]"


def render(tree, fields, mode):
    """The expression as rule text; leaves are literals, event fields, or (mode "mix") either."""
    kind = tree[0]
    if kind == "leaf":
        if not isinstance(tree[1], dict) and (mode == "literals" or (mode == "mix" and tree[2])):
            return literal_text(tree[1])
        name = f"v{len(fields)}"
        fields[name] = tree[1]
        return f"event.{name}"
    parts = [render(child, fields, mode) for child in tree[2 if kind in ("bin", "un", "call", "member") else 1 :]]
    if kind == "list":
        return f"[{parts[0]}, {parts[1]}]"
    if kind == "member":
        return f"({parts[0]}).{tree[1]}"
    if kind == "bin":
        return f"({parts[0]} {tree[1]} {parts[1]})"
    if kind == "un":
        return f"({tree[1]} {parts[0]})"
    if kind == "if":
        return f"(if {parts[0]} then {parts[1]} else {parts[2]})"
    return f"{tree[1]}({', '.join(parts)})"


def engine_result(text, fields):
    """("value", v), ("error",) or None when the rule does not load (a kind known at load)."""
    try:
        engine = engine_for(f"rule probe when true then probe with v = {text} end")
    except LoadError:
        return None
    decision = engine.decide(event(**fields), explain=True, dry_run=True)
    if decision.action == "probe":
        return ("value", decision.params["v"])
    assert trace_entry(decision, "probe").outcome == "error"
    return ("error",)


def same(result, expected):
    if result[0] != expected[0]:
        return False
    if result[0] == "error":
        return True
    a, b = result[1], expected[1]
    return model_eq(a, b) and type(a) is type(b)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(expression_trees())
def test_the_engine_agrees_with_a_model_of_dsl_md(tree):
    try:
        expected = ("value", model(tree))
    except ModelError:
        expected = ("error",)
    for mode in ("fields", "mix", "literals"):
        fields: dict = {}
        text = render(tree, fields, mode)
        result = engine_result(text, fields)
        if result is None:  # a kind the checker knows to be wrong when loading
            continue
        assert same(result, expected), (mode, text, fields, result, expected)
