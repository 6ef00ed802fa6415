"""The example ruleset in rules/: it loads, its own test cases pass, and they cover every rule."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from nba.dsl import load_ruleset
from nba.engine.ruletests import find_test_files, load_test_file, run_tests

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(RULES)


def test_the_example_ruleset_loads(ruleset):
    ids = {rule.id for rule in ruleset.rules}
    assert {
        "cart_reminder_email",
        "category_interest_banner",
        "winback_email",
        "vip_upsell",
        "first_purchase_welcome",
        "black_friday_banner",
    } <= ids
    assert ruleset.default is not None
    assert ruleset.policies and any(p.channel is None for p in ruleset.policies)
    assert "purchase" in ruleset.on_updates
    assert any(rule.holdout for rule in ruleset.rules)
    assert any(rule.active_to != float("inf") for rule in ruleset.rules)


def test_every_rule_says_what_it_is_for():
    for path in sorted(RULES.glob("*.rules")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if re.match(r"\s*(rule|on|default|policy|segment)\b", line):
                assert number > 0 and lines[number - 1].lstrip().startswith("#") or "#" in line, (
                    f"{path.name}:{number + 1}: `{line.strip()}` has no comment saying what it is for"
                )


def test_the_example_cases_pass():
    out = io.StringIO()
    code = run_tests(str(RULES), out)
    text = out.getvalue()
    assert code == 0, text
    assert "FAIL" not in text
    assert re.search(r"^all \d+ passed \(\d+ cases in \d+ files\)$", text, re.M), text


def test_every_rule_has_a_positive_and_a_negative_case(ruleset):
    positive, negative = set(), set()
    for path in find_test_files(RULES):
        for case in load_test_file(path, ruleset):
            expect = case.expect
            if expect.first.rule:
                positive.add(expect.first.rule)
            for alternative in expect.alternatives or ():
                if alternative.rule:
                    positive.add(alternative.rule)
            negative.update(expect.not_rule)
            negative.update(rule for rule, what in expect.trace.items() if what != "chosen")
    ids = {rule.id for rule in ruleset.rules}
    assert ids - positive == set(), "rules without a case where they are chosen"
    assert ids - negative == set(), "rules without a case where they are not"
    assert "default" in positive


def _copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target, ignore=shutil.ignore_patterns("tests"))
    return target


def test_a_failing_case_returns_1_and_says_what_differed(tmp_path):
    rules = _copy_rules(tmp_path)
    (rules / "mine.test.toml").write_text(
        """
[[case]]
name = "passes"
profile = { email_opt_in = true }
event = { type = "cart_abandoned", cart_value = 80, time = 2026-11-20T10:00:00Z }
expect = { action = "cart_reminder" }

[[case]]
name = "a small cart gets the banner"
profile = { email_opt_in = true }
event = { type = "cart_abandoned", cart_value = 51, time = 2026-11-20T10:00:00Z }
expect = { action = "cart_banner" }
""",
        encoding="utf-8",
    )
    out = io.StringIO()
    assert run_tests(str(rules), out) == 1
    text = out.getvalue()
    assert "PASS passes\n" in text
    assert f"FAIL a small cart gets the banner ({rules / 'mine.test.toml'}:8)" in text
    assert "expected action cart_banner, got cart_reminder (rule cart_reminder_email)" in text
    # the trace shows why: the email rule ranked first and was chosen
    assert re.search(r"cart_reminder_email\s+priority 80\s+chosen", text), text
    assert re.search(r"cart_banner_web\s+priority 30\s+not reached", text), text
    assert text.rstrip().endswith("1 failed, 1 passed (2 cases in 1 file)")


def test_a_ruleset_that_does_not_load_returns_2(tmp_path):
    rules = _copy_rules(tmp_path)
    (rules / "broken.rules").write_text("rule oops\n  when event.cart_valeu > 1\nend\n", encoding="utf-8")
    out = io.StringIO()
    assert run_tests(str(rules), out) == 2
    assert "broken.rules:" in out.getvalue()
    assert "no tests were run" in out.getvalue()
