"""DSL.md, "Errors when loading": one broken file per kind of error under
tests/rulefiles/broken/, each checked for its line, its column and the key words of its
message; the report format; a directory with several broken files."""

from __future__ import annotations

import re

import pytest

from nba.dsl import LoadError, load_ruleset, load_text
from nba.engine.cli import main

from dsl_helpers import RULEFILES, engine_at, event, load_errors, only_error

BROKEN = RULEFILES / "broken"

# file, line, column, words the message must hold
CASES = [
    # syntax errors say what was expected, in words
    ("syntax_expected.rules", 4, 3, ["unexpected `then`", "expected a value or expression"]),
    ("equals_instead_of_compare.rules", 2, 21, ["`=`", "write `==`"]),
    ("missing_end.rules", 5, 1, ["unexpected `rule`", "missing its `end`"]),
    ("missing_end_of_file.rules", 2, 56, ["end of the file", "missing its `end`"]),
    ("misspelled_keyword.rules", 4, 1, ["unexpected `edn`", "did you mean `end`?"]),
    ("chained_comparison.rules", 2, 30, ["comparisons do not chain", "a < b and b < c"]),
    ("single_quotes.rules", 2, 24, ["double quotes"]),
    ("unclosed_string.rules", 2, 24, ["string is not closed"]),
    ("duration_without_unit.rules", 1, 25, ["a duration needs a unit", "`7d`"]),
    ("if_without_parentheses.rules", 2, 17, ["`if`", "parentheses"]),
    ("where_outside_aggregate.rules", 2, 29, ["`where` only goes inside an aggregate"]),
    ("reserved_word_name.rules", 1, 9, ["`from` is a reserved word"]),
    # names
    ("unknown_segment.rules", 4, 33, ["unknown segment `vips`", "did you mean `vip`?"]),
    ("unknown_profile_field.rules", 7, 8, ["unknown profile field `lifetime_valeu`", "did you mean `lifetime_value`?"]),
    (
        "unknown_event_field.rules",
        4,
        43,
        ["unknown field `cart_valu`", "`cart_abandoned`", "did you mean `cart_value`?"],
    ),
    ("unknown_where_field.rules", 4, 30, ["unknown field `categroy`", "`page_view`", "did you mean `category`?"]),
    ("unknown_function.rules", 2, 8, ["unknown function `uper`", "did you mean `upper`?"]),
    ("unknown_type.rules", 2, 9, ["unknown type `text`", "string, number, bool, time, list"]),
    ("duplicate_rule.rules", 6, 6, ["duplicate rule id `welcome`"]),
    ("duplicate_segment.rules", 3, 9, ["duplicate segment id `vip`"]),
    ("segment_cycle.rules", 1, 9, ["segment cycle", "a -> b -> c -> a"]),
    # kinds
    ("wrong_kind_literal.rules", 3, 41, ["`*` takes numbers", '`"10%"` is a string']),
    ("wrong_kind_schema_field.rules", 4, 42, ["`>` compares two numbers or two strings", "`profile.tier` is a string"]),
    ("when_not_a_condition.rules", 4, 33, ["`and` takes true or false", "`event.category` is a string"]),
    ("bad_regex.rules", 2, 27, ["bad regex", "^ORD-[0-9+$", "unterminated character set"]),
    ("bad_time.rules", 4, 15, ["`2026-02-30` is not a valid time"]),
    ("unknown_escape.rules", 2, 35, ["unknown escape `\\U`", "write \\\\ for a backslash"]),
    # limits
    ("policy_zero.rules", 1, 19, ["policy must allow at least 1", "found 0"]),
    ("policy_negative.rules", 1, 17, ["policy must allow at least 1", "found -2"]),
    ("cap_zero.rules", 4, 7, ["cap must allow at least 1", "found 0"]),
    ("holdout_out_of_range.rules", 4, 11, ["holdout 120%", "outside 0-100%"]),
    ("holdout_negative.rules", 1, 33, ["holdout -5%", "outside 0-100%"]),
    # rule structure
    ("two_when.rules", 4, 8, ["more than one `when` clause"]),
    ("two_priorities.rules", 5, 12, ["more than one `priority` clause"]),
    ("no_then.rules", 1, 6, ["rule `forgetful` has no `then` clause"]),
    ("no_when.rules", 1, 6, ["rule `eager` has no `when` clause"]),
    ("aggregate_without_within.rules", 2, 8, ["`count` needs a window", "`within`"]),
    ("aggregate_without_window.rules", 2, 8, ["`count` needs a window", "`within`"]),
]

TOKEN_NAMES = re.compile(
    r"\b(NAME|STRING|NUMBER|SIGNED_NUMBER|DURATION|TIME|PERCENT|COMPARE|PLUS|MINUS|MUL_OP|LPAR|RPAR|"
    r"LSQB|RSQB|LBRACE|RBRACE|COMMA|DOT|COLON|EQUAL|ALL|[A-Z]{2,}_[A-Z_]+)\b|\$END|__ANON"
)


def test_every_broken_file_is_covered():
    files = {path.name for path in BROKEN.glob("*.rules")}
    assert files == {case[0] for case in CASES}


@pytest.mark.parametrize("name, line, column, words", CASES, ids=[case[0] for case in CASES])
def test_a_load_error_of_each_kind(name, line, column, words):
    path = BROKEN / name
    with pytest.raises(LoadError) as info:
        load_ruleset(path)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == 1, info.value.report()
    error = diagnostics[0]
    assert error.pos.path == str(path)
    assert (error.pos.line, error.pos.column) == (line, column), error.message
    for word in words:
        assert word in error.message
    assert not TOKEN_NAMES.search(error.message), error.message


def test_the_report_format():
    path = BROKEN / "unknown_segment.rules"
    with pytest.raises(LoadError) as info:
        load_ruleset(path)
    assert str(info.value) == (
        f"{path}:4:33: error: unknown segment `vips`; did you mean `vip`?\n"
        '  when event.type == "view" and vips\n'
        "                                ^"
    )
    assert info.value.report() == str(info.value)


def test_the_caret_keeps_tabs_under_tabs():
    error = load_errors("rule r\n\twhen\tvipp\n\tthen a\nend\n", "tabs.rules")
    with pytest.raises(LoadError) as info:
        load_text("rule r\n\twhen\tvipp\n\tthen a\nend\n", "tabs.rules")
    assert (error[0].pos.line, error[0].pos.column) == (2, 7)
    assert str(info.value).splitlines()[1:] == ["\twhen\tvipp", "\t    \t^"]


def test_lines_and_columns_count_from_1():
    error = only_error("vipp", "one.rules")
    assert (error.pos.line, error.pos.column) == (1, 1)
    error = only_error("rule r when x then a end", "one.rules")
    assert (error.pos.line, error.pos.column) == (1, 13)


def test_every_error_is_reported_not_just_the_first():
    diagnostics = load_errors(
        """
        segment vip = profile.tier == "gold"
        segment vip = true
        rule a when vipp then x end
        rule a when true then y cap 0 per 1d end
        rule b when lowr("A") == "a" then z holdout 200% end
        policy email: cap 0 per 1d
        """
    )
    found = [(d.pos.line, d.message.split(";")[0]) for d in diagnostics]
    assert found == [
        (3, "duplicate segment id `vip`"),
        (4, "unknown segment `vipp`"),
        (5, "duplicate rule id `a`"),
        (5, "a cap must allow at least 1 (found 0)"),
        (6, "unknown function `lowr`"),
        (6, "holdout 200% is outside 0-100%"),
        (7, "a policy must allow at least 1 (found 0)"),
    ]


def test_a_syntax_error_stops_only_its_own_file():
    root = BROKEN / "multi"
    with pytest.raises(LoadError) as info:
        load_ruleset(root)
    found = [(d.pos.path, d.pos.line, d.pos.column, d.message) for d in info.value.diagnostics]
    assert found == [
        (str(root / "a_syntax.rules"), 5, 3, "unexpected `then`; expected a value or expression"),
        # b is checked although a did not parse (so a's segment `vip` is unknown here, and the
        # message says where it might be declared)
        (
            str(root / "b_checked.rules"),
            2,
            35,
            f"unknown segment `vipp` (if it is declared in {root / 'a_syntax.rules'}, fix the syntax error there first)",
        ),
        # the second `welcome` in declaration order is in z_last/, and every error of it is reported
        (str(root / "z_last" / "c_dupe.rules"), 1, 6, "duplicate rule id `welcome`"),
        (str(root / "z_last" / "c_dupe.rules"), 4, 7, "a cap must allow at least 1 (found 0)"),
    ]
    report = str(info.value)
    assert report.count(": error: ") == 4
    # files not ending in .rules are not read (ignored.txt, ignored.rules.bak hold broken text)
    assert "ignored" not in report


def test_files_not_ending_in_rules_are_ignored(tmp_path):
    (tmp_path / "ok.rules").write_text("rule r when true then a end\n")
    (tmp_path / "notes.txt").write_text("this is ( not a rule\n")
    (tmp_path / "old.rules.bak").write_text("rule r when\n")
    (tmp_path / "rules").write_text("rule r when\n")
    (tmp_path / "sub.rules").mkdir()  # a directory ending in .rules is searched, not read
    (tmp_path / "sub.rules" / "inner.rules").write_text("rule inner when true then b end\n")
    ruleset = load_ruleset(tmp_path)
    assert [rule.id for rule in ruleset.rules] == ["r", "inner"]


def test_files_are_read_in_lexicographic_order_of_their_relative_paths(tmp_path):
    names = ["a.rules", "B.rules", "a-b.rules", "a/b.rules", "a/a/z.rules", "é.rules", "z.rules"]
    for number, name in enumerate(names):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"rule r{number} when true then act{number} end\n", encoding="utf-8")
    ruleset = load_ruleset(tmp_path)
    # code points: "B" < "a"; "-" < "." < "/"; "z" < "é"
    in_order = ["B.rules", "a-b.rules", "a.rules", "a/a/z.rules", "a/b.rules", "z.rules", "é.rules"]
    assert [rule.id for rule in ruleset.rules] == [f"r{names.index(name)}" for name in in_order]
    assert [path.removeprefix(str(tmp_path) + "/") for path in ruleset.paths] == in_order


def test_declaration_order_breaks_ties_across_files(tmp_path):
    (tmp_path / "b.rules").write_text("rule from_b priority 5 when true then b end\n")
    (tmp_path / "a.rules").write_text("rule from_a priority 5 when true then a end\n")
    assert engine_at(tmp_path).decide(event()).rule == "from_a"
    (tmp_path / "a.rules").rename(tmp_path / "c.rules")
    assert engine_at(tmp_path).decide(event()).rule == "from_b"


def test_a_duplicate_is_reported_at_its_second_place_in_declaration_order(tmp_path):
    (tmp_path / "b.rules").write_text("\n\nrule twice when true then b end\n")
    (tmp_path / "a.rules").write_text("rule twice when true then a end\n")
    with pytest.raises(LoadError) as info:
        load_ruleset(tmp_path)
    (error,) = info.value.diagnostics
    assert (error.pos.path, error.pos.line, error.pos.column) == (str(tmp_path / "b.rules"), 3, 6)


def test_a_ruleset_with_no_rule_files_or_no_such_path(tmp_path):
    with pytest.raises(LoadError) as info:
        load_ruleset(tmp_path)
    assert "no .rules files" in str(info.value)
    with pytest.raises(LoadError) as info:
        load_ruleset(tmp_path / "missing")
    assert "no such file or directory" in str(info.value)


def test_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / "latin1.rules").write_bytes('rule r when profile.city == "Zürich" then a end\n'.encode("latin-1"))
    (tmp_path / "other.rules").write_text("rule s when vipp then b end\n")
    with pytest.raises(LoadError) as info:
        load_ruleset(tmp_path)
    messages = [d.message for d in info.value.diagnostics]
    assert any("not UTF-8" in m for m in messages)
    assert any("unknown segment `vipp`" in m for m in messages)  # the other file is still checked


# ---- more messages, from text -----------------------------------------------------------------

MORE = [
    # text, line, column, words
    ("rule r when true then a\nrule s when true then b end", 2, 1, ["missing its `end`"]),
    ("rule r when (event.x then a end", 1, 22, ["unexpected `then`", "expected an operator or `)`"]),
    ("rule r when event.x in [1, 2 then a end", 1, 30, ["unexpected `then`", "expected an operator, `,` or `]`"]),
    ("rule r when event.x && true then a end", 1, 21, ["write `and`"]),
    ("rule r when event.x || true then a end", 1, 21, ["write `or`"]),
    ("rule r when !event.x then a end", 1, 13, ["write `not`"]),
    ("ruel r when true then a end", 1, 1, ["did you mean `rule`?"]),
    ("rule r whn true then a end", 1, 8, ["did you mean `when`?"]),
    ("rule r when true then a end extra", 1, 29, ["unexpected `extra`", "a declaration"]),
    ("rule r when true then a cap 1.5 per 1h end", 1, 29, ["whole contacts"]),
    ("rule r when true then a holdout 10 end", 1, 33, ["percentage such as 10%"]),
    ("rule r when true then a via end", 1, 29, ["`end` is a reserved word"]),
    ("rule when when true then a end", 1, 6, ["`when` is a reserved word"]),
    ("rule r when true then a with end = 1 end", 1, 30, ["`end` is a reserved word"]),
    ("rule r when true then a with x = 1, x = 2 end", 1, 37, ["parameter `x` is given twice"]),
    ("rule r when true then a active to 2026-11-27 end", 1, 32, ["expected `from`"]),
    ("rule r when true then a active from 2026-11-27 to 2026-11-01 end", 1, 51, ["later than `from`"]),
    ('rule r priority "high" when true then a end', 1, 17, ["`priority` must be a number", "string"]),
    ("rule r when 1 in 5 then a end", 1, 18, ["`in` needs a list or a string"]),
    ("rule r when not 5 then a end", 1, 17, ["`not` takes true or false"]),
    ('rule r when "x" then a end', 1, 13, ["`when` needs a condition", "string"]),
    ("rule r when if 1 then true else false then a end", 1, 16, ["`if` takes true or false"]),
    ('rule r when -"a" == 1 then a end', 1, 13, ["`-` takes a number"]),
    ('rule r when "a" + 1 == 1 then a end', 1, 17, ["`+` joins two strings or adds two numbers"]),
    ("rule r when count(buy.amount within 1h) > 1 then a end", 1, 19, ["`count` takes an event type"]),
    ("rule r when sum(buy within 1h) > 1 then a end", 1, 17, ["`sum` needs an event field"]),
    ("rule r when max(buy.amount) > 1 then a end", 1, 13, ["`max` needs a window"]),
    ("rule r when since(buy) > 1 then a end", 1, 13, ["`since` needs a window"]),
    ("rule r when count() > 1 then a end", 1, 13, ["`count` counts past events"]),
    ('rule r when lower("a" where true) == "a" then a end', 1, 13, ["`lower` is not an aggregate"]),
    ("rule r when count(a where count(b within 1h) > 0 within 1h) > 0 then x end", 1, 27, ["cannot be nested"]),
    ("event e { n: number }\nrule r when sum(e.m within 1h) > 0 then a end", 2, 13, ["unknown field `m` of event `e`"]),
    ("event e { s: string }\nrule r when avg(e.s within 1h) > 0 then a end", 2, 13, ["`avg`", "`e.s` is a string"]),
    ('profile { n: number }\non buy set n = "x" end', 2, 16, ["profile field `n` is number", "string"]),
    ("profile { n: number }\non buy set m = 1 end", 2, 12, ["unknown profile field `m`"]),
    ("on buy end", 1, 8, ["unexpected `end`", "`set`"]),
    ("default a\ndefault b", 2, 9, ["a second `default`"]),
    ("profile { a: number }\nprofile { b: number }", 2, 1, ["a second `profile` schema"]),
    ("event e { a: number }\nevent e { b: number }", 2, 7, ["a second schema for event `e`"]),
    ("profile { a: number, a: string }", 1, 22, ["field `a` is declared twice"]),
    ("policy email cap 1 per 1h", 1, 14, ["expected `:`"]),
    # after a schema field, a field name may be any word: the message says "a name", not 34 keywords
    ("event e { a: number: string }", 1, 20, ["unexpected `:`", "expected `,`, a name or `}`"]),
    ("profile { { a: number }", 1, 11, ["unexpected `{`", "expected a name or `}`"]),
    ("rule r when 10% > 1 then a end", 1, 17, ["unexpected `>`", "value or expression"]),
    ("segment s = 1 + 1", 1, 15, ["a segment needs a condition", "number"]),
    ("rule r priority null when true then a end", 1, 17, ["`priority` must be a number", "always null"]),
    ("rule r priority event.x * null when true then a end", 1, 25, ["`priority` must be a number", "always null"]),
    ("rule r when true then a with v = 1 + profile end", 1, 38, ["`+` adds two numbers or joins two strings", "map"]),
    ("event e { type: number }", 1, 11, ["every event's `type` is a string"]),
    ("event e { customer_id: list }", 1, 11, ["every event's `customer_id` is a string"]),
    ("event e { time: string }", 1, 11, ["every event's `time` is a number", "`time`"]),
    ("segment a = a", 1, 9, ["segment cycle: a -> a"]),
    ("segment a = not a or true", 1, 9, ["segment cycle: a -> a"]),
    ("rule r when event.type.x == 1 then a end", 1, 13, ["`event.type` is a string and has no fields"]),
    # an unknown field with no close name lists the declared ones (when they are few)
    (
        'event x { a: number, b: string }\nrule r when event.type == "x" and event.c == 1 then a end',
        2,
        35,
        ["unknown field `c` of event `x` (declared: a, b)"],
    ),
    ("profile { tier: string }\non buy set zz = 1 end", 2, 12, ["unknown profile field `zz` (declared: tier)"]),
    (
        'event e { n: number }\nrule r when count(e where n > "x" within 1h) > 0 then a end',
        2,
        29,
        ["`>` compares two numbers or two strings", "`n` is a number"],
    ),
    (
        "event e { n: number }\nrule r when count(e where n within 1h) > 0 then a end",
        2,
        27,
        ["`where` needs a condition", "`n` is a number"],
    ),
]


@pytest.mark.parametrize("text, line, column, words", MORE, ids=[case[0][:40] for case in MORE])
def test_more_load_error_messages(text, line, column, words):
    error = load_errors(text)[0]
    assert (error.pos.line, error.pos.column) == (line, column), error.message
    for word in words:
        assert word in error.message
    assert not TOKEN_NAMES.search(error.message), error.message


GOOD = (RULEFILES / "good" / "retail" / "cart.rules").read_text()


@pytest.mark.parametrize("cut", range(1, len(GOOD), 7))
def test_syntax_errors_never_name_grammar_tokens(cut):
    """Every prefix of a good file that does not parse gets a message in words."""
    text = GOOD[:cut]
    try:
        load_text(text, "cut.rules")
    except LoadError as exc:
        for diagnostic in exc.diagnostics:
            assert not TOKEN_NAMES.search(diagnostic.message), (text[-40:], diagnostic.message)
            assert diagnostic.pos.line >= 1 and diagnostic.pos.column >= 1
            assert "\n" in exc.report()  # the source line and the caret follow


@pytest.mark.parametrize(
    "text, column, what",
    [
        ("rule r when count(x within 0s) > 0 then a end", 28, "`count`"),
        ("rule r when true then a cap 1 per 0m end", 35, "a cap"),
        ("policy all: cap 1 per 0d", 23, "a policy"),
    ],
)
def test_an_empty_window_is_a_load_error(text, column, what):
    # The engine's choice: a window (t - 0s, t] holds nothing, not even the event at t.
    error = only_error(text)
    assert (error.pos.line, error.pos.column) == (1, column)
    assert f"the window of {what} is empty" in error.message


def test_nba_check_prints_every_error_in_the_report_format(capsys):
    root = BROKEN / "multi"
    assert main(["check", str(root)]) == 1
    err = capsys.readouterr().err
    with pytest.raises(LoadError) as info:
        load_ruleset(root)
    assert err.startswith(info.value.report() + "\n")
    lines = err.splitlines()
    assert lines[0] == f"{root / 'a_syntax.rules'}:5:3: error: unexpected `then`; expected a value or expression"
    assert lines[1:3] == ["  then a", "  ^"]


def test_nba_check_accepts_a_good_ruleset(capsys):
    assert main(["check", str(RULEFILES / "good" / "multi")]) == 0
    assert capsys.readouterr().err == ""


def test_a_utf8_byte_order_mark_and_crlf_line_ends_are_read_as_text(tmp_path):
    (tmp_path / "windows.rules").write_bytes(
        b"\xef\xbb\xbfrule r when true then a end\r\nrule s\r\n  when vipp then b end\r\n"
    )
    with pytest.raises(LoadError) as info:
        load_ruleset(tmp_path)
    (error,) = info.value.diagnostics
    assert (error.pos.line, error.pos.column, error.message) == (3, 8, "unknown segment `vipp`")
    assert str(info.value).splitlines()[1:] == ["  when vipp then b end", "       ^"]
