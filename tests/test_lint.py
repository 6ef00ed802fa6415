"""`nba lint` and `nba check --lint`: each code on examples, the cases where a warning would
be false (null semantics, errors, caps, policies, ...), the output formats and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nba.dsl import LoadError
from nba.dsl.lint import lint_text
from nba.dsl.runtime import parse_time
from nba.engine.cli import main

LATER = parse_time("2030-01-01")


def lint(text: str, at: float = 0):
    return [(w.code, w.pos.line, w.pos.column, w.message) for w in lint_text(text, "t.rules", at=at)]


def codes(text: str, at: float = 0):
    return [(code, line) for code, line, _col, _msg in lint(text, at)]


def rule(rule_id: str, when: str, extra: str = "", then: str = "act via web") -> str:
    return f"rule {rule_id}\n  when {when}\n  then {then}\n{extra}end\n"


# ---- never-matches ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "event.x > 10 and event.x < 5",
        "event.x >= 5 and event.x < 5",
        'event.type == "a" and event.type == "b"',
        'event.type in ["a", "b"] and event.type == "c"',
        "event.x in [1, 2] and event.x == 3",
        "event.x == null and event.x != null",
        "event.x not in [1] and event.x == null",  # `null not in [...]` is false
        "event.x in [null]",  # a comparison with null is false
        "event.x < null",
        'profile.s < "m" and profile.s >= "m"',
        "profile.f and not profile.f",
        "profile.f == true and profile.f == false",
        "event.x > 3 and (event.x < 1 or event.x == 2)",
        "len(event.s) > 3 and len(event.s) < 2",  # the same expression has one value
        "false",
        'event.x == 1 and event.x == "1"',  # other kinds are unequal
        "not (event.x == 1) and not (event.x != 1)",  # neither raises: one of them is true
    ],
)
def test_never_matches(when):
    assert codes(rule("r", when)) == [("never-matches", 2)]


@pytest.mark.parametrize(
    "when",
    [
        "event.x != 5 and event.x == null",  # `null != 5` is true
        "not (event.x > 5) and event.x == null",  # `null > 5` is false, so its `not` is true
        "not (event.x > 5) and not (event.x <= 5)",  # both true on null
        "event.x > 5 or event.x <= 5",
        "event.x > 1 and event.x < 2",  # 1.5
        "event.x * 2 > 5 and event.x < 3",  # arithmetic: not reasoned about (2.9)
        "event.a > event.b and event.b < event.a",  # two fields: not reasoned about
        "event.x != 1 and event.x != 1.5 and event.x > 0 and event.x < 2",
        'event.s in "abc"',  # a substring
    ],
)
def test_no_false_never_matches(when):
    assert ("never-matches", 2) not in codes(rule("r", when))


def test_never_matches_is_at_when_and_names_the_conflicting_conditions():
    text = "rule r\n  priority 1\n  when event.y > 0\n   and event.x > 10\n   and event.x < 5\n  then a\nend\n"
    ((code, line, column, message),) = lint(text)
    assert (code, line, column) == ("never-matches", 3, 3)
    assert message == "rule `r` can never match: `event.x > 10` and `event.x < 5` are never true together"


def test_messages_write_aggregates_as_written():
    text = rule("r", "count(buy within 24h) > 3 and count(buy within 24h) < 2")
    assert lint(text)[0][3] == (
        "rule `r` can never match: `count(buy within 24h) > 3` and `count(buy within 24h) < 2` are never true together"
    )


def test_never_matches_through_segments():
    text = "segment big = event.x > 100\nsegment small = event.x < 10\n" + rule("r", "big and small")
    assert codes(text) == [("never-matches", 4)]


def test_clause_keywords_are_found_after_field_names_that_look_like_them():
    text = 'rule r\n  priority event.when + 1 # when\n  when "when" == event.x and event.x == "z"\n  then a\nend\n'
    assert lint(text)[0][:3] == ("never-matches", 3, 3)


# ---- redundant-condition ------------------------------------------------------------------


def test_redundant_condition_at_the_operand():
    text = rule("r", "event.x > 10 and event.x > 5")
    assert lint(text) == [
        ("redundant-condition", 2, 25, "`event.x > 5` is always true when the rule's other conditions are: remove it")
    ]


@pytest.mark.parametrize(
    "when, shown, occurrence",
    [
        ('event.type == "a" and event.type in ["a", "b"]', 'event.type in ["a", "b"]', 0),
        ("event.x == 3 and event.x != 4", "event.x != 4", 0),
        ("event.x not in [1, 2] and event.x != 1", "event.x != 1", 0),  # `not in` is false on null
        ("event.x != 1 and event.x not in [1, 2]", "event.x != 1", 0),
        ("event.x == 2 and event.x > 1", "event.x > 1", 0),
        ("event.x > 5 and event.x != null", "event.x != null", 0),
        ("event.x >= 5 and event.x > 5", "event.x >= 5", 0),
        ('profile.s == "b" and profile.s > "a"', 'profile.s > "a"', 0),
        ("profile.f and profile.f != false", "profile.f != false", 0),
        ("profile.f != false and profile.f", "profile.f != false", 0),  # on null, "x": only the first holds
        ("event.x > 1 and (event.x > 0 or event.y == 1)", "event.x > 0 or event.y == 1", 0),
        ("event.x > 1 and true", "true", 0),
        ("event.x > 1 and event.x > 1", "event.x > 1", 1),  # of two equal operands, the later
    ],
)
def test_redundant_conditions(when, shown, occurrence):
    found = lint(rule("r", when))
    column = len("  when ") + 1 + when.index(shown, when.index(shown) + 1 if occurrence else 0)
    assert [(code, line, col) for code, line, col, _m in found] == [("redundant-condition", 2, column)]
    assert found[0][3] == f"`{shown}` is always true when the rule's other conditions are: remove it"


@pytest.mark.parametrize(
    "when",
    [
        "event.x > 1 and event.y > 1",
        "event.x != null and event.x != 1",
        "profile.f != true and profile.f != false",  # null
        "event.x > 1 and event.x < 3",
        'event.type != "a" and event.type != "b"',
    ],
)
def test_no_false_redundant_condition(when):
    assert lint(rule("r", when)) == []


def test_a_segment_implied_by_the_rest_is_redundant():
    text = 'segment gold = profile.tier in ["gold", "platinum"]\n' + rule("r", 'profile.tier == "gold" and gold')
    assert lint(text)[0][:3] == ("redundant-condition", 3, 35)


# ---- shadowed ----------------------------------------------------------------------------

WINNER = 'rule a\n  priority 10\n  when event.type == "buy" and event.x > 10\n  then act_a via web with n = event.x, k = 1\n{extra}end\n'
LOSER = 'rule b\n  priority {priority}\n  when event.type == "buy" and event.x > 20 and profile.f\n  then act_b via web\nend\n'


def test_shadowed_at_the_rule_id_naming_the_winner():
    text = WINNER.format(extra="") + LOSER.format(priority=5)
    assert lint(text) == [
        (
            "shadowed",
            6,
            6,
            "rule `b` is never the first choice: `a` matches whenever it does, has a higher "
            "priority (10 > 5), and nothing can pass it over",
        )
    ]


def test_shadowed_with_equal_priority_only_by_an_earlier_rule():
    assert codes(WINNER.format(extra="") + LOSER.format(priority=10)) == [("shadowed", 6)]
    assert codes(LOSER.format(priority=10) + WINNER.format(extra="")) == []


@pytest.mark.parametrize(
    "extra, head",
    [
        ("  cap 1 per 1d\n", ""),
        ("  holdout 10%\n", ""),
        ("  active from 2020-01-01\n", ""),
        ("", "policy web: cap 3 per 1d\n"),
        ("", "policy all: cap 3 per 1d\n"),
    ],
)
def test_not_shadowed_by_a_rule_that_can_be_passed_over(extra, head):
    assert codes(head + WINNER.format(extra=extra) + LOSER.format(priority=5)) == []


def test_a_policy_on_another_channel_does_not_matter():
    assert codes("policy email: cap 3 per 1d\n" + WINNER.format(extra="") + LOSER.format(priority=5)) == [
        ("shadowed", 7)
    ]


@pytest.mark.parametrize(
    "winner",
    [
        WINNER.replace("k = 1", "k = event.x + 1"),  # a parameter that can fail
        WINNER.replace("k = 1", "k = lower(event.s)"),
        WINNER.replace("priority 10", "priority event.x"),  # not a constant
        WINNER.replace("event.x > 10", "event.x > 30"),  # does not match whenever b does
        WINNER.replace("event.x > 10", "event.x > 10 and event.z == 1"),
    ],
)
def test_not_shadowed(winner):
    assert codes(winner.format(extra="") + LOSER.format(priority=5)) == []


def test_not_shadowed_when_its_own_priority_is_not_a_constant():
    loser = LOSER.format(priority="5 + event.x")
    assert codes(WINNER.format(extra="") + loser) == []


def test_folded_constant_priorities_count():
    assert codes(WINNER.format(extra="").replace("priority 10", "priority 5 + 5") + LOSER.format(priority="2 * 3")) == [
        ("shadowed", 6)
    ]


# ---- unused-segment ---------------------------------------------------------------------


def test_unused_segment_at_the_segment():
    text = "segment lonely = event.x > 1\n" + rule("r", "event.x > 0")
    assert lint(text) == [
        (
            "unused-segment",
            1,
            9,
            "segment `lonely` is not used by any rule, priority, parameter, update, default or other segment",
        )
    ]


def test_segments_used_anywhere_are_used():
    text = (
        "segment s1 = event.x > 1\nsegment s2 = event.x > 2\nsegment s3 = event.x > 3\n"
        "segment s4 = event.x > 4\nsegment s5 = s4 or event.x > 5\nsegment s6 = event.x > 6\n"
        "segment s7 = event.x > 7\n"
        "rule r\n  priority if s1 then 1 else 0\n  when s5\n  then a with p = s2\nend\n"
        "on buy when s3\n  set n = if s6 then 1 else 2\nend\n"
        "default d with q = s7\n"
    )
    assert codes(text) == []


# ---- expired -------------------------------------------------------------------------


def test_expired_at_active():
    text = rule("r", "event.x > 0", extra="  active from 2026-11-27 to 2026-12-01\n")
    assert lint(text, at=parse_time("2026-12-01")) == [
        (
            "expired",
            4,
            3,
            "rule `r` was active until 2026-12-01T00:00:00Z, which is before 2026-12-01T00:00:00Z: "
            "it can no longer match; remove it or move its `to`",
        )
    ]
    assert lint(text, at=parse_time("2026-11-30T23:59:59Z")) == []
    assert lint(rule("r", "event.x > 0", extra="  active from 2026-11-27\n"), at=LATER) == []


# ---- the command line ----------------------------------------------------------------


BAD = rule("b", "event.x > 10 and event.x < 5")


def test_nba_lint_text_and_exit_codes(tmp_path, capsys):
    (tmp_path / "a.rules").write_text(BAD)
    (tmp_path / "b.rules").write_text("segment unused = event.y > 1\n" + rule("c", "event.x > 1"))
    assert main(["lint", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    a, b = tmp_path / "a.rules", tmp_path / "b.rules"
    assert out.splitlines() == [
        f"{a}:2:3: warning[never-matches]: rule `b` can never match: `event.x > 10` and `event.x < 5` are never true together",
        "  when event.x > 10 and event.x < 5",
        "  ^",
        f"{b}:1:9: warning[unused-segment]: segment `unused` is not used by any rule, priority, parameter, update, default or other segment",
        "segment unused = event.y > 1",
        "        ^",
    ]
    assert err.strip() == "2 warnings"


def test_nba_lint_json(tmp_path, capsys):
    path = tmp_path / "a.rules"
    path.write_text(BAD)
    assert main(["lint", str(path), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out) == [
        {
            "file": str(path),
            "line": 2,
            "column": 3,
            "code": "never-matches",
            "message": "rule `b` can never match: `event.x > 10` and `event.x < 5` are never true together",
        }
    ]


def test_nba_lint_clean_and_not_loading(tmp_path, capsys):
    path = tmp_path / "a.rules"
    path.write_text(rule("r", "event.x > 1"))
    assert main(["lint", str(path)]) == 0
    assert main(["lint", str(path), "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    path.write_text("rule r\n  when event.x >\n  then a\nend\n")
    assert main(["lint", str(path)]) == 2
    assert ":3:3: error:" in capsys.readouterr().err


def test_nba_lint_at(tmp_path, capsys):
    path = tmp_path / "a.rules"
    path.write_text(rule("r", "event.x > 1", extra="  active from 2026-11-27 to 2026-12-01\n"))
    assert main(["lint", str(path), "--at", "2026-11-28"]) == 0
    assert main(["lint", str(path), "--at", "2026-12-01T00:00:00Z"]) == 1
    assert main(["lint", str(path), "--at", str(parse_time("2026-11-28"))]) == 0
    assert main(["lint", str(path)]) == 1  # now
    assert main(["lint", str(path), "--at", "yesterday"]) == 2
    assert "--at" in capsys.readouterr().err
    assert main(["lint", str(path), "--at", "nan"]) == 2  # would make every window look ended
    assert main(["lint", str(path), "--at", "inf"]) == 2
    assert main(["lint", str(path), "--at", "1e20"]) == 1  # past year 9999: still a time
    assert "1e+20 (epoch seconds)" in capsys.readouterr().out


def test_nba_check_lint(tmp_path, capsys):
    path = tmp_path / "a.rules"
    path.write_text(BAD)
    assert main(["check", str(path)]) == 0
    capsys.readouterr()
    assert main(["check", "--lint", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "warning[never-matches]" in out and "ok, 1 warning" in err
    path.write_text(rule("r", "event.x > 1"))
    assert main(["check", "--lint", str(path)]) == 0
    path.write_text("rule r\n  when event.x >\n  then a\nend\n")
    assert main(["check", "--lint", str(path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_lint_text_raises_when_it_does_not_load():
    with pytest.raises(LoadError):
        lint_text("rule r when", "t.rules")


# ---- the example ruleset -------------------------------------------------------------


def test_example_rules_lint_clean_on_the_demo_day(capsys):
    """rules/ is the demo of Black Friday 2026 (engine/demo.py): clean on that day; later,
    only its two campaigns are reported, as expired."""
    assert main(["lint", "rules/", "--at", "2026-11-27"]) == 0
    assert main(["lint", "rules/", "--at", "2026-12-02", "--format", "json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [(w["code"], w["message"].split("`")[1]) for w in found] == [
        ("expired", "black_friday_banner"),
        ("expired", "black_friday_app_deal"),
    ]


# ---- the documentation's examples ------------------------------------------------------


def lint_doc_examples():
    text = (Path(__file__).resolve().parent.parent / "docs" / "lint.md").read_text(encoding="utf-8")
    return re.findall(r"^```nba\n(.*?)^```", text, re.S | re.M)


@pytest.mark.parametrize("example", lint_doc_examples(), ids=lambda text: text.split()[1])
def test_each_example_of_docs_lint_gets_the_warnings_its_comments_name(example):
    named = sorted(
        (number, code)
        for number, line in enumerate(example.splitlines(), 1)
        for code in re.findall(r"warning\[([a-z-]+)\]", line)
    )
    assert named, "every example names the warning it shows"
    assert sorted(codes(example, at=parse_time("2026-12-02"))) == [(code, line) for line, code in named]


def test_docs_lint_has_an_example_of_every_code():
    assert {code for ex in lint_doc_examples() for code in re.findall(r"warning\[([a-z-]+)\]", ex)} == {
        "never-matches",
        "shadowed",
        "redundant-condition",
        "unused-segment",
        "expired",
    }
