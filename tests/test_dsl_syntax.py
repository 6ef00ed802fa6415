"""DSL.md, "Lexical structure" and the shape of the syntax tree: precedence and
associativity pinned on the tree itself, literals, names and declarations."""

from __future__ import annotations

import pytest

from nba.dsl import nodes as n
from nba.dsl.source import Diagnostics
from nba.dsl.syntax import RESERVED, parse_module

from dsl_helpers import load_errors, only_error


def parse(text: str) -> n.Module:
    diagnostics = Diagnostics()
    module = parse_module("t.rules", text, diagnostics)
    assert not diagnostics, [d.message for d in diagnostics.items]
    return module


def tree(expr: n.Expr) -> str:
    """A compact s-expression of an expression node."""
    if isinstance(expr, n.Literal):
        return repr(expr.value)
    if isinstance(expr, n.ListExpr):
        return "[" + " ".join(tree(item) for item in expr.items) + "]"
    if isinstance(expr, n.Field):
        return ".".join((expr.root,) + expr.path)
    if isinstance(expr, n.SegmentRef):
        return expr.name
    if isinstance(expr, n.Member):
        return f"(. {tree(expr.target)} {expr.name})"
    if isinstance(expr, n.Unary):
        return f"({expr.op} {tree(expr.operand)})"
    if isinstance(expr, n.Binary):
        return f"({expr.op} {tree(expr.left)} {tree(expr.right)})"
    if isinstance(expr, n.IfExpr):
        return f"(if {tree(expr.cond)} {tree(expr.then)} {tree(expr.other)})"
    if isinstance(expr, n.Call):
        return f"({expr.name} " + " ".join(tree(arg) for arg in expr.args) + ")"
    if isinstance(expr, n.Aggregate):
        where = f" where {tree(expr.where)}" if expr.where is not None else ""
        return f"({expr.func} {'.'.join((expr.event_type,) + expr.path)}{where} within {expr.window:g})"
    raise AssertionError(type(expr))


def parse_expr(text: str) -> str:
    (segment,) = parse(f"segment s = {text}").declarations
    return tree(segment.condition)


SHAPES = [
    # left to right within a level
    ("a - b - c", "(- (- a b) c)"),
    ("a / b / c", "(/ (/ a b) c)"),
    ("a * b / c % d", "(% (/ (* a b) c) d)"),
    ("a + b - c + d", "(+ (- (+ a b) c) d)"),
    # `and` and `or` are associative: a chain becomes a balanced tree, operands in order
    # (so that a chain of thousands of tests loads); it is still tested left to right
    ("a or b or c", "(or a (or b c))"),
    ("a and b and c and d", "(and (and a b) (and c d))"),
    ("(a or b) or c", "(or a (or b c))"),
    # loosest first: if; or; and; not; comparisons, in, not in; + -; * / %; unary -; . and calls
    ("a or b and c", "(or a (and b c))"),
    ("a and b or c", "(or (and a b) c)"),
    ("not a and b", "(and (not a) b)"),
    ("not a or not b", "(or (not a) (not b))"),
    ("not not a", "(not (not a))"),
    ("not a == b", "(not (== a b))"),
    ("a == b and c != d", "(and (== a b) (!= c d))"),
    ("a + b == c * d", "(== (+ a b) (* c d))"),
    ("a + b * c", "(+ a (* b c))"),
    ("a * b + c", "(+ (* a b) c)"),
    ("-a * b", "(* (- a) b)"),
    ("-a.b", "(- a.b)".replace("a.b", "(. a b)")),
    ("- -a", "(- (- a))"),
    ("a - -b", "(- a (- b))"),
    ("a + b in c", "(in (+ a b) c)"),
    ("a not in b + c", "(not in a (+ b c))"),
    ("not a in b", "(not (in a b))"),
    ("a < b", "(< a b)"),
    ("a <= b", "(<= a b)"),
    ("a > b", "(> a b)"),
    ("a >= b", "(>= a b)"),
    ("(a or b) and c", "(and (or a b) c)"),
    ("a - (b - c)", "(- a (- b c))"),
    ("if a then b else c or d", "(if a b (or c d))"),
    ("if a or b then c + 1 else d", "(if (or a b) (+ c 1) d)"),
    ("if a then b else if c then d else e", "(if a b (if c d e))"),
    ("1 + (if a then 2 else 3)", "(+ 1 (if a 2 3))"),
    # member access and calls bind tightest
    ("event.a.b.c", "event.a.b.c"),
    ("profile.x", "profile.x"),
    ("event.from", "event.from"),
    ("event.a.end", "event.a.end"),
    ("lower(x).y", "(. (lower x) y)"),
    ("-abs(a)", "(- (abs a))"),
    ("f()", "(f )"),
    ("max(a, b + 1, c)", "(max a (+ b 1) c)"),
    ("[]", "[]"),
    ('[1, "a", [2]]', "[1 'a' [2]]"),
    ("a in [1, 2]", "(in a [1 2])"),
    # aggregates: `where` names are fields of the past event
    ("count(buy within 1h)", "(count buy within 3600)"),
    ("sum(buy.amount within 7d) > 0", "(> (sum buy.amount within 604800) 0)"),
    (
        "count(view where category == event.category within 30m)",
        "(count view where (== past.category event.category) within 1800)",
    ),
    (
        "max(buy.item.price where vip and profile.x within 1w)",
        "(max buy.item.price where (and past.vip profile.x) within 604800)",
    ),
]


@pytest.mark.parametrize("text, shape", SHAPES)
def test_precedence_and_associativity_in_the_tree(text, shape):
    assert parse_expr(text) == shape


@pytest.mark.parametrize(
    "text", ["a < b < c", "a == b == c", "a < b == c", "a in b in c", "a == b in c", "a not in b < c"]
)
def test_comparisons_do_not_chain(text):
    error = only_error(f"segment s = {text}")
    assert "comparisons do not chain" in error.message


LITERALS = [
    ("42", 42),
    ("3.5", 3.5),
    ("0", 0),
    ('"double quoted"', "double quoted"),
    (r'"a \"b\" c"', 'a "b" c'),
    (r'"back\\slash"', "back\\slash"),
    (r'"new\nline"', "new\nline"),
    (r'"tab\there"', "tab\there"),
    ('""', ""),
    ("true", True),
    ("false", False),
    ("null", None),
    ("45s", 45),
    ("30m", 1800),
    ("24h", 86400),
    ("7d", 604800),
    ("2w", 1209600),
    ("0s", 0),
    ("2026-11-27", 1_795_737_600),
    ("2026-11-27T09:30:00Z", 1_795_771_800),
    ("2026-11-27T09:30:00", 1_795_771_800),
    ("2026-11-27T09:30:00.5Z", 1_795_771_800.5),
    ("2026-11-27T11:30:00+02:00", 1_795_771_800),
]


@pytest.mark.parametrize("text, value", LITERALS)
def test_literals(text, value):
    (segment,) = parse(f"segment s = {text}").declarations
    assert isinstance(segment.condition, n.Literal)
    assert segment.condition.value == value and type(segment.condition.value) is type(value)


def test_a_leading_minus_is_the_unary_operator():
    assert parse_expr("-3") == "(- 3)"
    assert parse_expr("-3.5") == "(- 3.5)"
    assert parse_expr("-2 * 3") == "(* (- 2) 3)"


def test_identifiers():
    module = parse("segment _a_B9 = true\nsegment x1 = _a_B9\nsegment rules_and_ends = x1")
    assert [d.id for d in module.declarations] == ["_a_B9", "x1", "rules_and_ends"]
    assert tree(module.declarations[2].condition) == "x1"


def test_reserved_words_as_in_dsl_md():
    expected = (
        "rule segment policy on set when then via with priority cap per holdout active from to end and "
        "or not in within where if else true false null default profile event all"
    )
    assert RESERVED == frozenset(expected.split())


@pytest.mark.parametrize("word", sorted(RESERVED - {"true", "false", "null", "event", "profile", "not", "if"}))
def test_a_reserved_word_cannot_name_a_segment(word):
    error = load_errors(f"segment {word} = true")[0]
    assert (error.pos.line, error.pos.column) == (1, 9)
    assert "reserved word" in error.message or "unexpected" in error.message


@pytest.mark.parametrize("word", ["from", "end", "when", "all", "event", "type"])
def test_reserved_words_are_field_names_in_schemas_sets_and_after_a_dot(word):
    module = parse(
        f"profile {{ {word}: string }}\n"
        f"event e {{ {word}: number }}\n"
        f"on e set {word} = event.{word} end\n"
        f"rule r when count(e where true within 1d) > 0 and sum(e.{word} within 1d) > 0 then a end"
    )
    profile, event_schema, update, rule = module.declarations
    assert profile.fields[0].name == word and event_schema.fields[0].name == word
    assert update.sets[0].field == word and tree(update.sets[0].value) == f"event.{word}"
    assert f"(sum e.{word} within 86400)" in tree(rule.when)


def test_comments_run_to_the_end_of_the_line():
    module = parse(
        "# heading\n"
        "segment a = true # trailing\n"
        "# segment hidden = true\n"
        'segment b = "# inside a string"  # and after it\n'
    )
    assert [d.id for d in module.declarations] == ["a", "b"]
    assert module.declarations[1].condition.value == "# inside a string"


def test_whitespace_and_newlines_are_insignificant():
    one_line = parse("rule r priority 1 when a and b then x via web with k = 1, j = 2 end")
    spread = parse(
        "rule\nr\n\n  priority\n1\n\twhen a\n  and\n b\nthen\n x\n via\n web\n with\n k =\n 1\n ,\n j = 2\nend"
    )
    assert tree(one_line.declarations[0].when) == tree(spread.declarations[0].when)
    assert one_line.declarations[0].then.params[1][0] == spread.declarations[0].then.params[1][0] == "j"


def test_percentages_appear_only_after_holdout():
    (rule,) = parse("rule r when true then a holdout 12.5% end").declarations
    assert rule.holdout == 12.5
    assert load_errors("rule r when true then a cap 10% per 1d end")
    assert load_errors("rule r priority 10% when true then a end")


def test_a_duration_is_a_whole_number_directly_followed_by_its_unit():
    assert load_errors("segment s = 1.5h > 0")
    assert load_errors("segment s = 30 m > 0")
    assert load_errors("segment s = 30mins > 0")


def test_declarations_in_the_tree():
    module = parse(
        """
        profile { tier: string, ltv: number
          opted: bool }
        event buy { amount: number }
        segment vip = profile.tier == "gold"
        policy email: cap 2 per 7d
        policy all: cap 4 per 1d
        rule r "A title" priority 3 when vip then act via email with k = 1 cap 1 per 24h holdout 10% active from 2026-01-01 to 2027-01-01 end
        on buy when event.amount > 0 set ltv = profile.ltv + event.amount set tier = "x" end
        default browse via web with k = 2
        """
    )
    kinds = [type(d).__name__ for d in module.declarations]
    assert kinds == ["ProfileSchema", "EventSchema", "Segment", "Policy", "Policy", "Rule", "OnUpdate", "Default"]
    profile, event_schema, segment, email, every, rule, update, default = module.declarations
    assert [(f.name, f.type) for f in profile.fields] == [("tier", "string"), ("ltv", "number"), ("opted", "bool")]
    assert event_schema.event_type == "buy" and event_schema.fields[0].type == "number"
    assert (email.channel, email.limit, email.window) == ("email", 2, 604800)
    assert (every.channel, every.limit, every.window) == (None, 4, 86400)
    assert (rule.id, rule.title, tree(rule.priority), tree(rule.when)) == ("r", "A title", "3", "vip")
    assert (rule.then.action, rule.then.channel, [p[0] for p in rule.then.params]) == ("act", "email", ["k"])
    assert (rule.cap.limit, rule.cap.window, rule.holdout) == (1, 86400, 10.0)
    assert (rule.active_from, rule.active_to) == (1_767_225_600, 1_798_761_600)
    assert update.event_type == "buy" and tree(update.condition) == "(> event.amount 0)"
    assert [s.field for s in update.sets] == ["ltv", "tier"]
    assert (default.then.action, default.then.channel) == ("browse", "web")


def test_positions_count_from_1():
    module = parse("\n\n   rule  my_rule when true then a end")
    assert (module.declarations[0].pos.line, module.declarations[0].pos.column) == (3, 10)


def test_a_backslash_escapes_only_quote_backslash_n_and_t():
    assert parse_expr(r'"a\\x"') == repr("a\\x")  # an escaped backslash, then x
    errors = load_errors(r'segment s = "C:\path\new\x" == "\q\""')
    assert [(e.pos.column, e.message.split(" in a")[0]) for e in errors] == [
        (16, "unknown escape `\\p`"),
        (25, "unknown escape `\\x`"),  # `\n` before it is an escape
        (33, "unknown escape `\\q`"),
    ]


@pytest.mark.parametrize(
    "text, shape",
    [
        ("max(if a then 1 else 2, 3)", "(max (if a 1 2) 3)"),
        ("[if a then 1 else 2, 3]", "[(if a 1 2) 3]"),
        ("(if a then b else c) and d", "(and (if a b c) d)"),
    ],
)
def test_if_needs_no_parentheses_where_a_whole_expression_goes(text, shape):
    assert parse_expr(text) == shape
    (rule,) = parse(
        "rule r priority if vip then 60 else 40 when true then x with v = if a then 1 else 2 end"
    ).declarations
    assert tree(rule.priority) == "(if vip 60 40)"


@pytest.mark.parametrize(
    "text", ["a == if b then 1 else 2", "not if a then b else c", "a and if b then c else d", "-if a then 1 else 2"]
)
def test_if_inside_an_operator_needs_parentheses(text):
    error = only_error(f"segment s = {text}")
    assert "`if` inside an expression needs parentheses" in error.message
