"""Lint's warnings (``nba lint``) as findings of an analysis: one of ``FINDING_SOURCES``.

Lint judges only a ruleset that loads, as ``nba lint`` does: while the checker reports an
error, lint says nothing. It reads the analysis's checked tree (nothing is parsed or
checked again) and, to find a clause keyword such as ``when`` (``find_keyword``), the text
each node's place is counted in: a file is parsed in pieces (``chunks``), so a node
carries its piece's name and lines, and lint is given the pieces' texts under those names.
``Analysis.place`` then moves each warning into its file. Lint's results for the rules
that did not change are kept from check to check (``LintMemo``): a keystroke judges again
the rule it is in, not the ruleset.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nba.dsl.lint import lint_checked
from nba.engine.lsp.findings import WARNING, Finding

if TYPE_CHECKING:
    from nba.engine.lsp.analysis import Analysis

SOURCE = "nba lint"


def lint_findings(analysis: Analysis) -> list[Finding]:
    """The warnings ``nba lint`` gives for the analysed ruleset (at ``lint_at``, else now), or
    none while it has errors."""
    if any(analysis.findings.values()):
        return []
    at = time.time() if analysis.lint_at is None else analysis.lint_at
    warnings = lint_checked(analysis.checked, analysis.piece_texts, at, analysis.lint_memo)
    return [Finding(warning.pos, warning.message, WARNING, warning.code, SOURCE) for warning in warnings]
