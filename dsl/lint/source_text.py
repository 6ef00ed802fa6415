"""Places and text of what lint talks about: where a clause keyword is, where an
expression starts, and an expression written back as rule text for messages."""

from __future__ import annotations

import bisect
import functools
import re

from nba.dsl import nodes as n
from nba.dsl.source import Position
from nba.dsl.unparse import source_text, start_of

__all__ = ["find_keyword", "show", "start_of"]

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"?|[A-Za-z_][A-Za-z0-9_]*|.', re.S)


def find_keyword(text: str | None, start: Position, word: str) -> Position | None:
    """The place of the clause keyword ``word`` (``when``, ``active``) in the rule whose id is
    at ``start``: the first ``word`` after it that is not a field name (after a ``.``), a
    string or a comment, before the rule's ``end``. The syntax tree keeps no place for
    clause keywords, so lint finds them in the text."""
    if text is None:
        return None
    starts = _line_starts(text)
    if not 1 <= start.line <= len(starts):
        return None
    offset = starts[start.line - 1] + start.column - 1
    after_dot = False
    for match in _TOKEN.finditer(text, offset):
        token = match.group()
        if token[0].isspace() or token[0] == "#":
            continue
        if not after_dot and token in (word, "end") and match.start() != offset:
            if token == "end":
                return None
            line = bisect.bisect_right(starts, match.start())
            return Position(start.path, line, match.start() - starts[line - 1] + 1)
        after_dot = token == "."
    return None


@functools.lru_cache(maxsize=16)
def _line_starts(text: str) -> list[int]:
    """The offset of each line's first character (lines end at \\n, as the parser counts)."""
    return [0] + [match.end() for match in re.finditer("\n", text)]


def show(expr: n.Expr) -> str:
    """The expression as rule text in backquotes, for messages."""
    return f"`{source_text(expr)}`"
