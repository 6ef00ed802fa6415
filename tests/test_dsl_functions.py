"""DSL.md, "Functions": every function, with literals and with values from the event."""

from __future__ import annotations

import pytest

from dsl_helpers import EvalFailed, evaluate, holds, only_error

MONDAY = "2026-11-23T00:00:00Z"

FUNCTIONS = [
    # lower, upper
    ('lower("AbC É")', "abc é"),
    ('upper("abc é")', "ABC É"),
    ('lower("")', ""),
    # len: strings (code points), lists, maps
    ('len("héllo")', 5),
    ('len("")', 0),
    ("len([1, 2, 3])", 3),
    ("len([])", 0),
    # contains: an item of a list (by ==) or a substring
    ("contains([1, 2], 2.0)", True),
    ("contains([1, 2], 3)", False),
    ('contains([1, 2], "1")', False),
    ('contains(["a", "b"], "b")', True),
    ("contains([[1]], [1])", True),
    ('contains("abc", "b")', True),
    ('contains("abc", "B")', False),
    ('contains("abc", "")', True),
    # starts_with, ends_with
    ('starts_with("abc", "ab")', True),
    ('starts_with("abc", "bc")', False),
    ('starts_with("abc", "")', True),
    ('ends_with("abc", "bc")', True),
    ('ends_with("abc", "ab")', False),
    # matches: anywhere in the string, anchored with ^ and $
    ('matches("xabcx", "abc")', True),
    ('matches("xabc", "^abc")', False),
    ('matches("abcx", "^abc")', True),
    ('matches("abcx", "abc$")', False),
    ('matches("xabc", "abc$")', True),
    ('matches("abc", "^abc$")', True),
    ('matches("abcx", "^abc$")', False),
    ('matches("order-123", "[0-9]+")', True),
    ('matches("ABC", "abc")', False),
    ('matches("ABC", "(?i)abc")', True),
    ('matches("", "")', True),
    # abs, min, max
    ("abs(-3)", 3),
    ("abs(2.5)", 2.5),
    ("abs(0)", 0),
    ("min(3, 1, 2)", 1),
    ("min(7)", 7),
    ("min(1.5, 2)", 1.5),
    ("max(3, 1, 2)", 3),
    ("max(-1, -2.5)", -1),
    # round: halves away from zero, optional digits
    ("round(2.5)", 3),
    ("round(3.5)", 4),
    ("round(-2.5)", -3),
    ("round(0.5)", 1),
    ("round(2.4)", 2),
    ("round(-2.4)", -2),
    ("round(7)", 7),
    ("round(2.345, 2)", 2.35),
    ("round(2.5, 0)", 3),
    ("round(1.25, 1)", 1.3),
    ("round(-1.25, 1)", -1.3),
    ("round(1234.5, -2)", 1200),
    ("round(1250, -2)", 1300),
    # floor, ceil
    ("floor(2.7)", 2),
    ("floor(-2.5)", -3),
    ("floor(3)", 3),
    ("ceil(2.1)", 3),
    ("ceil(-2.5)", -2),
    ("ceil(3)", 3),
    # coalesce: the first that is not null
    ("coalesce(null, null, 3)", 3),
    ("coalesce(1, 2)", 1),
    ('coalesce(null, "a")', "a"),
    ("coalesce(null, false, true)", False),
    ("coalesce(null)", None),
    ("coalesce(event.nothing, 0)", 0),
    # time: an RFC 3339 string or a number to a time
    ('time("2026-11-27T00:00:00Z")', 1_795_737_600),
    ('time("2026-11-27")', 1_795_737_600),
    ('time("2026-11-27T09:30:00")', 1_795_771_800),
    ('time("2026-11-27T10:30:00+01:00")', 1_795_771_800),
    ("time(1795737600)", 1_795_737_600),
    ("time(12.5)", 12.5),
    ('time("2026-11-27") == 2026-11-27', True),
    # hour: 0-23, UTC
    ("hour(2026-11-27T09:30:00Z)", 9),
    ("hour(2026-11-27T23:59:59Z)", 23),
    ("hour(2026-11-27)", 0),
    ("hour(2026-11-27T09:30:00+02:00)", 7),
    ("hour(0)", 0),
    # weekday: 1 = Monday ... 7 = Sunday, UTC
    (f'weekday(time("{MONDAY}"))', 1),
    ("weekday(2026-11-24)", 2),
    ("weekday(2026-11-27)", 5),
    ("weekday(2026-11-28)", 6),
    ("weekday(2026-11-29)", 7),
    ("weekday(2026-11-29T23:59:59Z)", 7),
    ("weekday(2026-11-30T00:30:00+01:00)", 7),  # still Sunday in UTC
    # days: seconds in days, fractional
    ("days(86400)", 1.0),
    ("days(129600)", 1.5),
    ("days(3600) * 24", 1.0),
    ("days(7d)", 7.0),
    ("days(2026-11-28 - 2026-11-27)", 1.0),
]


@pytest.mark.parametrize("expr, expected", FUNCTIONS)
def test_functions_with_literals(expr, expected):
    value = evaluate(expr)
    assert value == expected and type(value) is type(expected)


FUNCTIONS_ON_FIELDS = [
    ("lower(event.s)", {"s": "AbC"}, "abc"),
    ("upper(event.s)", {"s": "AbC"}, "ABC"),
    ("len(event.s)", {"s": "héllo"}, 5),
    ("len(event.l)", {"l": [1, 2]}, 2),
    ("len(event.m)", {"m": {"a": 1, "b": 2}}, 2),
    ("contains(event.l, 2)", {"l": [1, 2.0]}, True),
    ('contains(event.s, "bc")', {"s": "abcd"}, True),
    ("starts_with(event.s, event.p)", {"s": "abc", "p": "a"}, True),
    ("ends_with(event.s, event.p)", {"s": "abc", "p": "c"}, True),
    ('matches(event.s, "^[a-z]+@example\\\\.com$")', {"s": "ann@example.com"}, True),
    ('matches(event.s, "^[a-z]+@example\\\\.com$")', {"s": "ann@exampleXcom"}, False),
    ("abs(event.n)", {"n": -4.5}, 4.5),
    ("min(event.a, event.b, 10)", {"a": 3, "b": 2.5}, 2.5),
    ("max(event.a, event.b, 1)", {"a": 3, "b": 2.5}, 3),
    ("round(event.n)", {"n": 2.5}, 3),
    ("round(event.n)", {"n": -0.5}, -1),
    ("round(event.n, event.d)", {"n": 2.675, "d": 2}, 2.68),
    ("floor(event.n)", {"n": -0.5}, -1),
    ("ceil(event.n)", {"n": 0.5}, 1),
    ("coalesce(event.a, event.b, 9)", {"b": 4}, 4),
    ("time(event.s)", {"s": "2026-11-27T09:30:00Z"}, 1_795_771_800),
    ("time(event.n)", {"n": 1_795_771_800}, 1_795_771_800),
    ("hour(event.time)", {"time": "2026-11-27T21:05:00Z"}, 21),
    ("weekday(event.time)", {"time": "2026-11-29T12:00:00Z"}, 7),
    ("days(event.n)", {"n": 43200}, 0.5),
]


@pytest.mark.parametrize("expr, fields, expected", FUNCTIONS_ON_FIELDS)
def test_functions_on_event_fields(expr, fields, expected):
    value = evaluate(expr, fields=fields)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "call",
    [
        "lower(event.x)",
        "upper(event.x)",
        "len(event.x)",
        "contains(event.x, 1)",
        "contains([1], event.x)",
        'starts_with(event.x, "a")',
        'starts_with("a", event.x)',
        'ends_with(event.x, "a")',
        'matches(event.x, "a")',
        "abs(event.x)",
        "min(1, event.x)",
        "max(event.x, 1)",
        "round(event.x)",
        "round(2.5, event.x)",
        "floor(event.x)",
        "ceil(event.x)",
        "time(event.x)",
        "hour(event.x)",
        "weekday(event.x)",
        "days(event.x)",
    ],
)
def test_a_function_given_null_returns_null(call):
    assert evaluate(call) is None
    assert holds(f"{call} == null")


def test_coalesce_is_the_exception_to_null_in_null_out():
    assert evaluate("coalesce(event.x, 5)") == 5
    assert evaluate("coalesce(event.x, event.y)") is None


def test_a_function_returning_null_in_a_condition_counts_as_false():
    assert holds('starts_with(event.x, "a")') is False
    assert holds('not starts_with(event.x, "a")') is True
    assert holds('matches(event.x, "a") or true') is True


@pytest.mark.parametrize(
    "expr, fields, words",
    [
        ("lower(event.n)", {"n": 1}, "`lower` takes a string"),
        ("upper(event.b)", {"b": True}, "`upper` takes a string"),
        ("len(event.n)", {"n": 1}, "`len`"),
        ("contains(event.n, 1)", {"n": 1}, "`contains`"),
        ("contains(event.s, 1)", {"s": "abc"}, "`contains`"),
        ('starts_with(event.n, "a")', {"n": 1}, "`starts_with`"),
        ('ends_with("a", event.n)', {"n": 1}, "`ends_with`"),
        ('matches(event.n, "a")', {"n": 1}, "`matches`"),
        ("abs(event.s)", {"s": "1"}, "`abs`"),
        ("min(1, event.s)", {"s": "1"}, "`min`"),
        ("max(event.b, 1)", {"b": True}, "`max`"),
        ("round(event.s)", {"s": "2.5"}, "`round`"),
        ("floor(event.s)", {"s": "2.5"}, "`floor`"),
        ("ceil(event.s)", {"s": "2.5"}, "`ceil`"),
        ("time(event.s)", {"s": "next tuesday"}, "`time`"),
        ("time(event.b)", {"b": True}, "`time`"),
        ("hour(event.s)", {"s": "09:00"}, "`hour`"),
        ("weekday(event.s)", {"s": "monday"}, "`weekday`"),
        ("days(event.s)", {"s": "1"}, "`days`"),
    ],
)
def test_a_function_given_the_wrong_kind_at_decision_time_is_an_error(expr, fields, words):
    with pytest.raises(EvalFailed) as info:
        evaluate(expr, fields=fields)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "text, column, words",
    [
        ('rule r when lower(1) == "a" then a end', 19, "`lower` takes a string"),
        ("rule r when len(5) > 0 then a end", 17, "`len`"),
        ('rule r when abs("a") > 0 then a end', 17, "`abs` takes a number"),
        ('rule r when round(1, "a") > 0 then a end', 22, "`round` takes a number"),
        ('rule r when starts_with(1, "a") then a end', 25, "`starts_with` takes a string"),
        ('rule r when hour("9") > 0 then a end', 18, "`hour` takes a number"),
        ("rule r when time(true) > 0 then a end", 18, "`time` takes a number or a string"),
        ('rule r when lower() == "a" then a end', 13, "`lower` takes 1 argument, but 0 are given"),
        ("rule r when round(1, 2, 3) > 0 then a end", 13, "`round` takes 1 to 2 arguments, but 3 are given"),
        ("rule r when max() > 0 then a end", 13, "`max` takes at least 1 argument, but 0 are given"),
        ("rule r when contains([1]) then a end", 13, "`contains` takes 2 arguments, but 1 is given"),
    ],
)
def test_function_kinds_and_arity_known_at_load_time_are_load_errors(text, column, words):
    error = only_error(text)
    assert (error.pos.line, error.pos.column) == (1, column)
    assert words in error.message


def test_matches_takes_a_literal_pattern():
    error = only_error('rule r when matches("a", event.p) then a end')
    assert "pattern of `matches` must be a string literal" in error.message
    assert (error.pos.line, error.pos.column) == (1, 26)


def test_functions_compose():
    assert evaluate('upper(lower("MiXeD")) + "!"') == "MIXED!"
    assert evaluate("round(days(2026-11-30 - 2026-11-27T12:00:00Z), 1)") == 2.5
    assert evaluate('max(len("ab"), abs(-5), floor(4.9))') == 5


@pytest.mark.parametrize(
    "n, digits, expected",
    [
        (1e30, 0, 10**30),
        (123456789012345678901234567890, 0, 123456789012345678901234567890),
        (1e20, 2, 1e20),
        (2.5, 400, 2.5),
        (2.5, 10**9, 2.5),
        (2.5, -400, 0),
        (-2.5, -(10**9), 0),
        (1e-300, 2, 0.0),
        (7, 3, 7.0),
    ],
)
def test_round_of_large_numbers_and_many_digits(n, digits, expected):
    value = evaluate("round(event.n, event.d)", n=n, d=digits)
    assert value == expected and type(value) is type(expected)


def test_null_wins_over_a_wrong_kind_in_any_argument():
    # DSL.md: a function given a null argument returns null, whatever its other arguments
    assert evaluate("min(event.b, event.x)", b=True) is None
    assert evaluate("max(event.s, event.x)", s="a") is None
    assert evaluate("starts_with(event.n, event.x)", n=1) is None
    assert evaluate("round(event.s, event.x)", s="a") is None
