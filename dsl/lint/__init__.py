"""Static analysis of a ruleset that loads: ``nba lint`` and ``nba check --lint``.

It reads the checked syntax tree (``dsl.checker``) and nothing of the engine. The codes
and their meaning are in docs/lint.md; how conditions are judged, in ``conditions.py``
and ``checks.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nba.dsl.checker import CheckedRuleset, check
from nba.dsl.lint.checks import CODES, LintMemo, LintWarning, lint_checked
from nba.dsl.loader import load_ruleset, rule_files
from nba.dsl.source import Diagnostics, LoadError
from nba.dsl.syntax import parse_module

__all__ = ["CODES", "LintMemo", "LintWarning", "lint_path", "lint_checked", "lint_text", "format_text", "format_json"]


def load_checked(root: str | os.PathLike) -> tuple[CheckedRuleset, dict[str, str]]:
    """The checked tree of a ruleset and its files' text; ``LoadError`` as ``load_ruleset``
    raises it when the ruleset does not load.

    ``load_ruleset`` decides whether the ruleset loads (the one place that does); the
    files are then parsed and checked once more for the tree, which the compiled ruleset
    does not keep.
    """
    load_ruleset(root)
    sources = {path: Path(path).read_text(encoding="utf-8-sig") for path in rule_files(os.fspath(root))}
    return checked_from_sources(sources), sources


def checked_from_sources(sources: dict[str, str]) -> CheckedRuleset:
    diagnostics = Diagnostics()
    modules = [parse_module(path, text, diagnostics) for path, text in sources.items()]
    checked = check([m for m in modules if m is not None], diagnostics)
    if diagnostics:  # the files changed since load_ruleset read them
        raise LoadError(diagnostics.items, {path: text.splitlines() for path, text in sources.items()})
    return checked


def lint_path(root: str | os.PathLike, at: float | None = None) -> tuple[list[LintWarning], dict[str, str]]:
    """The warnings of the ruleset at ``root`` (``at``: the time ``expired`` compares with,
    default now) and the files' text; ``LoadError`` when it does not load."""
    checked, sources = load_checked(root)
    return lint_checked(checked, sources, time.time() if at is None else at), sources


def lint_text(text: str, name: str = "<rules>", at: float | None = None) -> list[LintWarning]:
    """The warnings of a ruleset given as one string (tests, tools)."""
    from nba.dsl.loader import load_text

    load_text(text, name)
    sources = {name: text}
    return lint_checked(checked_from_sources(sources), sources, time.time() if at is None else at)


def format_text(warnings: list[LintWarning], sources: dict[str, str]) -> str:
    """``PATH:LINE:COLUMN: warning[CODE]: MESSAGE``, the line and a caret, for each warning."""
    out = []
    lines_of: dict[str, list[str]] = {}
    for warning in warnings:
        pos = warning.pos
        out.append(f"{pos}: warning[{warning.code}]: {warning.message}")
        lines = lines_of.get(pos.path)
        if lines is None:
            lines = lines_of[pos.path] = sources.get(pos.path, "").splitlines()
        if 1 <= pos.line <= len(lines):
            line = lines[pos.line - 1].rstrip("\r\n")
            pad = "".join("\t" if ch == "\t" else " " for ch in line[: pos.column - 1])
            out.append(line)
            out.append(pad + "^")
    return "\n".join(out)


def format_json(warnings: list[LintWarning]) -> str:
    return json.dumps(
        [
            {"file": w.pos.path, "line": w.pos.line, "column": w.pos.column, "code": w.code, "message": w.message}
            for w in warnings
        ],
        indent=2,
        ensure_ascii=False,
    )
