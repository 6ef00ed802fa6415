"""The `nba test` file format (engine/ruletests.py): cases, expectations and bad files."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from nba.engine.ruletests import DEFAULT_CUSTOMER, load_test_file, run_tests

RULES = """
profile { email_opt_in: bool, tier: string, seen_at: time }
event cart_abandoned { cart_value: number }

rule big_cart
  priority 10
  when event.type == "cart_abandoned" and event.cart_value > 50 and profile.email_opt_in
  then reminder via email with value = event.cart_value, who = event.customer_id
  cap 1 per 1d
end

rule any_cart
  when event.type == "cart_abandoned"
  then banner via web
end

rule seen_recently
  when event.type == "ping" and event.time - profile.seen_at < 1d
  then hello
end

rule twice
  when event.type == "ping" and count(ping within 1h) >= 2
  then twice_in_an_hour
end

on cart_abandoned
  set tier = "shopper"
end

rule shoppers
  when event.type == "visit" and profile.tier == "shopper"
  then welcome_back via web
end
"""


def ruleset_dir(tmp_path: Path, tests: str, rules: str = RULES) -> Path:
    (tmp_path / "main.rules").write_text(rules, encoding="utf-8")
    (tmp_path / "t.test.toml").write_text(textwrap.dedent(tests), encoding="utf-8")
    return tmp_path


def run(tmp_path: Path, tests: str, rules: str = RULES) -> tuple[int, str]:
    out = io.StringIO()
    code = run_tests(str(ruleset_dir(tmp_path, tests, rules)), out)
    return code, out.getvalue()


# -- passing and failing ---------------------------------------------------------------


def test_a_passing_file(tmp_path):
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "big cart"
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { rule = "big_cart", action = "reminder", channel = "email", params = { value = 80.0 } }

        [[case]]
        name = "limit 2"
        limit = 2
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { action = "reminder", alternatives = ["banner"] }

        [[case]]
        name = "no rule for this event"
        event = { type = "page_view" }
        expect = { nothing = true }
        """,
    )
    assert code == 0, text
    assert text.splitlines() == [
        "PASS big cart",
        "PASS limit 2",
        "PASS no rule for this event",
        "all 3 passed (3 cases in 1 file)",
    ]


def test_the_default_customer_and_the_customer_given(tmp_path):
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "default customer"
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { params = { who = "%s" } }

        [[case]]
        name = "given customer"
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80, customer_id = "c-9" }
        expect = { params = { who = "c-9" } }
        """
        % DEFAULT_CUSTOMER,
    )
    assert code == 0, text


def test_history_counts_and_each_case_starts_fresh(tmp_path):
    code, text = run(
        tmp_path,
        """
        [defaults]
        time = 2026-03-01T12:00:00Z
        profile = { email_opt_in = true }

        [[case]]
        name = "the second cart of the day is capped"
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { rule = "any_cart", trace = { big_cart = "cap" } }
        [[case.history]]
        type = "cart_abandoned"
        ago = "2h"
        cart_value = 70

        [[case]]
        name = "the same customer again: no cap left over from the last case"
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { rule = "big_cart" }

        [[case]]
        name = "another customer's history does not count"
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { rule = "big_cart" }
        [[case.history]]
        type = "cart_abandoned"
        customer_id = "someone-else"
        ago = "2h"
        cart_value = 70

        [[case]]
        name = "history in any order, at absolute times"
        event = { type = "ping" }
        expect = { action = "twice_in_an_hour" }
        [[case.history]]
        type = "ping"
        time = "2026-03-01T11:30:00Z"
        [[case.history]]
        type = "ping"
        time = 2026-02-01

        [[case]]
        name = "an on-update from the history is seen by the event"
        event = { type = "visit" }
        expect = { rule = "shoppers" }
        [[case.history]]
        type = "cart_abandoned"
        ago = "1d1h"
        cart_value = 5
        """,
    )
    assert code == 0, text


def test_toml_times_in_a_profile_are_times(tmp_path):
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "seen an hour ago"
        profile = { seen_at = 2026-03-01T11:00:00Z }
        event = { type = "ping", time = 2026-03-01T12:00:00Z }
        expect = { action = "hello" }

        [[case]]
        name = "seen two days ago (a date is midnight UTC)"
        profile = { seen_at = 2026-02-27 }
        event = { type = "ping", time = "2026-03-01T12:00:00Z" }
        expect = { nothing = true }
        """,
    )
    assert code == 0, text


@pytest.mark.parametrize(
    "expect, message",
    [
        ('{ action = "banner" }', "expected action banner, got reminder (rule big_cart)"),
        ('{ rule = "any_cart" }', "expected rule any_cart, got big_cart (action reminder)"),
        ('{ channel = "web" }', "expected channel web, got email"),
        ("{ params = { value = 81 } }", "expected params.value = 81, got 80"),
        ('{ params = { value = "80" } }', 'expected params.value = "80", got 80'),
        ("{ params = { discount = 5 } }", "expected params.discount = 5, but there is no such parameter"),
        ("{ nothing = true }", "expected nothing, got reminder (rule big_cart)"),
        ('{ not_rule = "big_cart" }', "expected rule big_cart not to be chosen, but it is the first choice"),
        ('{ not_action = ["x_unused", "reminder"] }', "expected action reminder not to be given"),
        ('{ alternatives = ["banner"] }', "expected 1 alternatives (banner), got 0 (none)"),
        ('{ trace = { big_cart = "cap" } }', "expected big_cart to be cap, the trace says chosen"),
        ('{ trace = { any_cart = "not matched" } }', "expected any_cart to be not matched, the trace says not reached"),
    ],
)
def test_what_a_failure_says(tmp_path, expect, message):
    rules = RULES + "\nrule unused\n  when false\n  then x_unused\nend\n"
    code, text = run(
        tmp_path,
        f"""
        [[case]]
        name = "it"
        profile = {{ email_opt_in = true }}
        event = {{ type = "cart_abandoned", cart_value = 80 }}
        expect = {expect}
        """,
        rules,
    )
    assert code == 1, text
    assert f"FAIL it ({tmp_path / 't.test.toml'}:2)" in text
    assert message in text, text
    assert "trace (rules for this event type, best ranked first):" in text
    assert text.rstrip().endswith("1 failed, 0 passed (1 case in 1 file)")


def test_an_event_the_engine_refuses_fails_the_case(tmp_path):
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "bad value"
        event = { type = "cart_abandoned", cart_value = "lots" }
        expect = { action = "banner" }

        [[case]]
        name = "bad history"
        event = { type = "cart_abandoned", cart_value = 1 }
        expect = { action = "banner" }
        [[case.history]]
        type = "cart_abandoned"
        ago = "1h"
        cart_value = "lots"
        """,
    )
    assert code == 1
    assert "the event was refused: cart_value: must be a number" in text
    assert "history event 1 (cart_abandoned at 2026-06-01T11:00:00Z) was refused: cart_value" in text


def test_trace_words(tmp_path):
    rules = (
        RULES
        + '\npolicy email: cap 1 per 1d\nrule other_email\n  priority 5\n  when event.type == "cart_abandoned"\n  then other via email\nend\n'
    )
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "policy"
        limit = 3
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { trace = { big_cart = "chosen", other_email = "policy email", any_cart = "chosen", seen_recently = "not_matched" } }

        [[case]]
        name = "any policy, passed over"
        limit = 3
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { trace = { other_email = "policy" } }

        [[case]]
        name = "passed over"
        limit = 3
        profile = { email_opt_in = true }
        event = { type = "cart_abandoned", cart_value = 80 }
        expect = { trace = { other_email = "passed over" } }
        """,
        rules,
    )
    assert code == 0, text


# -- files that do not load ------------------------------------------------------------


def errors_of(tmp_path: Path, tests: str) -> str:
    code, text = run(tmp_path, tests)
    assert code == 2, text
    assert "no tests were run" in text
    return text


def test_missing_expect_and_event(tmp_path):
    text = errors_of(
        tmp_path,
        """
        [[case]]
        name = "no expect"
        event = { type = "cart_abandoned" }

        [[case]]
        name = "no event"
        expect = { action = "banner" }

        [[case]]
        event = { type = "x" }
        expect = { nothing = true }
        """,
    )
    path = tmp_path / "t.test.toml"
    assert f"{path}:2: error: case 'no expect' needs an `expect` table" in text
    assert f"{path}:6: error: case 'no event' needs an `event`" in text
    assert f"{path}:10: error: case 3 needs a `name`" in text


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    text = errors_of(
        tmp_path,
        """
        title = "x"

        [[case]]
        name = "typos"
        event = { type = "cart_abandoned" }
        expct = { action = "banner" }
        expect = { acton = "banner" }
        [[case.history]]
        type = "cart_abandoned"
        ago = "1h"
        """,
    )
    path = tmp_path / "t.test.toml"
    assert "unknown key `title` at the top of the file (known: case, defaults)" in text
    assert f"{path}:7: error: unknown key `expct` in case 'typos'; did you mean `expect`?" in text
    assert "unknown key `acton` in the `expect` of case 'typos'; did you mean `action`?" in text


def test_unknown_rules_actions_and_trace_words(tmp_path):
    text = errors_of(
        tmp_path,
        """
        [[case]]
        name = "names"
        event = { type = "cart_abandoned" }
        expect = { rule = "big_crat", action = "remnder", not_rule = "nope", trace = { any_cart = "skipped" } }
        """,
    )
    assert "the ruleset has no rule `big_crat`; did you mean `big_cart`?" in text
    assert "the ruleset has no action `remnder`; did you mean `reminder`?" in text
    assert "the ruleset has no rule `nope`" in text
    assert "trace.any_cart must be one of" in text


@pytest.mark.parametrize(
    "case, message",
    [
        ("event = { cart_value = 1 }\nexpect = { nothing = true }", "event needs a `type`"),
        ('event = { type = "x" }\nexpect = {}', "expect is empty"),
        ('event = { type = "x" }\nexpect = { nothing = true, action = "banner" }', "`nothing = true` cannot go with"),
        ('event = { type = "x" }\nexpect = { nothing = "yes" }', "`nothing` must be true or false"),
        (
            'event = { type = "x" }\nlimit = 0\nexpect = { nothing = true }',
            "`limit` must be a whole number from 1 to 100",
        ),
        ('event = { type = "x", time = "yesterday" }\nexpect = { nothing = true }', "event: time must be a time"),
        ('event = { type = "x", ago = "1h" }\nexpect = { nothing = true }', "`ago` is only for history events"),
        (
            'event = { type = "x" }\nexpect = { nothing = true }\nhistory = [{ type = "x" }]',
            "history event 1 needs a `time` (or `ago`",
        ),
        (
            'event = { type = "x" }\nexpect = { nothing = true }\nhistory = [{ type = "x", ago = "soon" }]',
            "`ago` must be a duration",
        ),
        (
            'event = { type = "x" }\nexpect = { nothing = true }\nhistory = [{ type = "x", ago = "1h", time = 5 }]',
            "give `time` or `ago`, not both",
        ),
        ('event = { type = "x" }\nexpect = { params = 5 }', "`params` must be a table"),
        ('event = { type = "x" }\nexpect = { alternatives = "banner" }', "`alternatives` must be a list"),
        ('event = "x"\nexpect = { nothing = true }', "`event` must be a table"),
        ('event = { type = "x" }\nexpect = { nothing = true }\nprofile = 3', "`profile` must be a table"),
    ],
)
def test_bad_cases(tmp_path, case, message):
    text = errors_of(tmp_path, '[[case]]\nname = "bad"\n' + case + "\n")
    assert message in text, text


def test_toml_syntax_errors_name_the_line(tmp_path):
    text = errors_of(tmp_path, '[[case]]\nname = "x"\nevent = { type = "x" \nexpect = { nothing = true }\n')
    assert f"{tmp_path / 't.test.toml'}:3: error: not valid TOML" in text


def test_a_file_without_cases(tmp_path):
    text = errors_of(tmp_path, "# nothing here\n")
    assert "no test cases: a test file holds `[[case]]` tables" in text


def test_every_bad_file_is_reported_before_anything_runs(tmp_path):
    ruleset_dir(tmp_path, '[[case]]\nname = "good"\nevent = { type = "x" }\nexpect = { nothing = true }\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.test.toml").write_text("[[case]]\nname = 1\n", encoding="utf-8")
    (tmp_path / "sub" / "b.test.toml").write_text("not toml at all", encoding="utf-8")
    out = io.StringIO()
    assert run_tests(str(tmp_path), out) == 2
    text = out.getvalue()
    assert "a.test.toml:2: error: case 1 needs a `name`" in text
    assert "b.test.toml:1: error: not valid TOML" in text
    assert "PASS" not in text
    assert "in 2 test files: no tests were run" in text


def test_no_test_files(tmp_path):
    (tmp_path / "main.rules").write_text(RULES, encoding="utf-8")
    out = io.StringIO()
    assert run_tests(str(tmp_path), out) == 1
    assert "no test files (*.test.toml)" in out.getvalue()


def test_a_ruleset_that_does_not_load(tmp_path):
    code, text = run(
        tmp_path, '[[case]]\nname = "x"\nevent = { type = "x" }\nexpect = { nothing = true }\n', "rule x\n"
    )
    assert code == 2
    assert "main.rules:" in text and "error:" in text
    assert "does not load: no tests were run" in text


def test_a_one_file_ruleset_has_its_test_file_beside_it(tmp_path):
    (tmp_path / "promo.rules").write_text(RULES, encoding="utf-8")
    (tmp_path / "promo.test.toml").write_text(
        '[[case]]\nname = "beside"\nevent = { type = "cart_abandoned", cart_value = 1 }\nexpect = { action = "banner" }\n',
        encoding="utf-8",
    )
    (tmp_path / "other.test.toml").write_text("broken", encoding="utf-8")  # another ruleset's: not read
    out = io.StringIO()
    assert run_tests(str(tmp_path / "promo.rules"), out) == 0, out.getvalue()
    assert "PASS beside" in out.getvalue()


def test_load_test_file_without_a_ruleset_checks_only_the_format(tmp_path):
    path = tmp_path / "x.test.toml"
    path.write_text(
        '[defaults]\ntime = 2026-01-01\n[[case]]\nname = "x"\nevent = { type = "t" }\nexpect = { rule = "anything" }\n'
        '[[case.history]]\ntype = "t"\nago = "1d"\n',
        encoding="utf-8",
    )
    (case,) = load_test_file(str(path))
    assert case.event == {"type": "t", "customer_id": DEFAULT_CUSTOMER, "time": 1767225600}
    assert case.history == [{"type": "t", "time": 1767225600 - 86400, "customer_id": DEFAULT_CUSTOMER}]
    assert case.expect.first.rule == "anything"
    assert case.line == 3


def test_sections_instead_of_inline_tables(tmp_path):
    code, text = run(
        tmp_path,
        """
        [[case]]
        name = "sections"
        limit = 2

        [case.profile]
        email_opt_in = true

        [case.event]
        type = "cart_abandoned"
        cart_value = 80

        [case.expect]
        rule = "big_cart"
        params = { value = 80 }
        alternatives = [
          { rule = "any_cart", channel = "web" },
        ]

        [[case.history]]
        type = "ping"
        ago = "2d"

        [[case]]
        name = "a typo in a section"
        event = { type = "x" }
        [case.expect]
        nothin = true
        """,
    )
    assert code == 2
    assert (
        f"{tmp_path / 't.test.toml'}:27: error: unknown key `nothin` in the `expect` of case 'a typo in a section'; did you mean `nothing`?"
        in text
    )
    (tmp_path / "t.test.toml").write_text(
        (tmp_path / "t.test.toml").read_text(encoding="utf-8").replace("nothin =", "nothing ="), encoding="utf-8"
    )
    out = io.StringIO()
    assert run_tests(str(tmp_path), out) == 0, out.getvalue()
