"""The VS Code extension's TextMate grammar, run by VS Code's own engine (vscode-textmate
on vscode-oniguruma) over the example rules: chosen tokens get the scopes a theme colours."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "nba-rules.tmLanguage.json"
HARNESS = VSCODE / "test"
EXAMPLES = sorted((ROOT / "rules").glob("*.rules"))

SAMPLE = """rule late_order "a \\"quoted\\" title\\n" # a comment after code
  when event.type == "purchase" and event.time >= 2026-11-27T09:30:00Z and event.end > 1.5
  then thanks via email with total = event.amount % 7
  holdout 2.5%
end
"""

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run VS Code's TextMate engine (apt-get install nodejs npm)",
)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict[str, list[list[dict]]]:
    if not (HARNESS / "node_modules" / "vscode-textmate").is_dir():  # scripts/test.sh installs them first
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HARNESS, check=True, capture_output=True)
    sample = tmp_path_factory.mktemp("grammar") / "sample.rules"
    sample.write_text(SAMPLE, encoding="utf-8")
    files = [str(p) for p in EXAMPLES] + [str(sample)]
    done = subprocess.run(
        ["node", str(HARNESS / "tokenize.js"), str(GRAMMAR), *files], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return {Path(path).name: lines for path, lines in out.items()}


def scopes_of(tokens, file: str, line_part: str, text: str) -> list[str]:
    """The scopes of the token ``text`` on the first line of ``file`` that holds ``line_part``."""
    source = (ROOT / "rules" / file).read_text(encoding="utf-8") if file != "sample.rules" else SAMPLE
    for number, line in enumerate(source.splitlines()):
        if line_part in line:
            found = [t["scopes"] for t in tokens[file][number] if t["text"] == text]
            assert found, f"no token {text!r} on line {number + 1} of {file}: {tokens[file][number]}"
            return found[0]
    raise AssertionError(f"no line of {file} holds {line_part!r}")


@pytest.mark.parametrize(
    "file, line_part, text, scope",
    [
        ("cart.rules", "rule cart_reminder_email", "rule", "keyword.other.declaration.nba-rules"),
        ("cart.rules", "rule cart_reminder_email", "cart_reminder_email", "entity.name.function.rule.nba-rules"),
        ("cart.rules", "when event.type", "when", "keyword.control.nba-rules"),
        ("cart.rules", "and event.cart_value > 50", "and", "keyword.operator.logical.nba-rules"),
        ("cart.rules", "and event.cart_value > 50", "cart_value", "variable.other.property.nba-rules"),
        ("cart.rules", "and event.cart_value > 50", ">", "keyword.operator.comparison.nba-rules"),
        ("cart.rules", "and event.cart_value > 50", "50", "constant.numeric.nba-rules"),
        ("cart.rules", "priority 80", "80", "constant.numeric.nba-rules"),
        ("cart.rules", "count(purchase within 24h)", "24h", "constant.numeric.duration.nba-rules"),
        ("cart.rules", "count(purchase within 24h)", "count", "support.function.nba-rules"),
        ("cart.rules", "holdout 10%", "10%", "constant.numeric.percentage.nba-rules"),
        ("cart.rules", '"Abandoned cart reminder"', "Abandoned cart reminder", "string.quoted.double.nba-rules"),
        ("cart.rules", "# Abandoned carts.", " Abandoned carts.", "comment.line.number-sign.nba-rules"),
        ("cart.rules", "then cart_reminder via email", "email", "entity.name.tag.channel.nba-rules"),
        ("campaigns.rules", "active from 2026-11-27", "2026-11-27", "constant.numeric.time.nba-rules"),
        ("schema.rules", "tier: string", "tier", "variable.other.property.nba-rules"),
        ("schema.rules", "tier: string", "string", "support.type.nba-rules"),
        ("schema.rules", "event page_view {", "page_view", "entity.name.type.event.nba-rules"),
        ("segments.rules", "segment vip", "vip", "entity.name.variable.segment.nba-rules"),
        ("profile_updates.rules", "profile.lifetime_value", "profile", "variable.language.nba-rules"),
        ("sample.rules", "2026-11-27T09:30:00Z", "2026-11-27T09:30:00Z", "constant.numeric.time.nba-rules"),
        ("sample.rules", "rule late_order", '\\"', "constant.character.escape.nba-rules"),
        ("sample.rules", "rule late_order", "\\n", "constant.character.escape.nba-rules"),
        ("sample.rules", "rule late_order", " a comment after code", "comment.line.number-sign.nba-rules"),
        ("sample.rules", "event.end > 1.5", "end", "variable.other.property.nba-rules"),  # a reserved word after `.`
        ("sample.rules", "event.end > 1.5", "1.5", "constant.numeric.nba-rules"),
        ("sample.rules", "event.amount % 7", "%", "keyword.operator.arithmetic.nba-rules"),
        ("sample.rules", "holdout 2.5%", "2.5%", "constant.numeric.percentage.nba-rules"),
    ],
)
def test_token_scope(tokens, file, line_part, text, scope):
    scopes = scopes_of(tokens, file, line_part, text)
    assert scopes[0] == "source.nba-rules"
    assert scope in scopes, f"{text!r} in {file}: {scopes}"


def test_the_example_rules_have_no_illegal_tokens(tokens):
    for example in EXAMPLES:
        for number, line in enumerate(tokens[example.name], 1):
            for token in line:
                assert not any(s.startswith("invalid") for s in token["scopes"]), (example.name, number, token)


def test_every_reserved_word_outside_strings_and_comments_is_a_keyword_or_constant(tokens):
    from nba.dsl.syntax import RESERVED

    keyword_scopes = ("keyword.", "constant.language.", "variable.language.", "entity.name.", "variable.other.property")
    for example in EXAMPLES:
        for line in tokens[example.name]:
            for token in line:
                if token["text"] in RESERVED and not any(
                    s.startswith(("string.", "comment.")) for s in token["scopes"]
                ):
                    assert any(s.startswith(keyword_scopes) for s in token["scopes"][1:]), (example.name, token)
