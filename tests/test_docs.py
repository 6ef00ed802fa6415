"""The documentation's rule examples load, and its links point at pages that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nba.dsl import load_ruleset

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```nba\n(.*?)^```", re.S | re.M)


def nba_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            found.append((page.name, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def test_the_docs_have_rule_examples():
    assert len(nba_blocks()) >= 7


@pytest.mark.parametrize("page, line, text", nba_blocks(), ids=lambda v: str(v)[:24])
def test_every_rule_example_in_the_docs_loads(page, line, text, tmp_path):
    path = tmp_path / "example.rules"
    path.write_text(text, encoding="utf-8")
    load_ruleset(str(path))  # raises LoadError with every problem


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 250
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target
