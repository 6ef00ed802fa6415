"""Places and text of what lint talks about: where a clause keyword is, where an
expression starts, and an expression written back as rule text for messages."""

from __future__ import annotations

import bisect
import functools
import re

from nba.dsl import nodes as n
from nba.dsl.source import Position

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


def start_of(expr: n.Expr) -> Position:
    """Where an expression's text starts (a comparison's own place is its operator's)."""
    while True:
        if isinstance(expr, n.Binary):
            expr = expr.left
        elif isinstance(expr, n.Member):
            expr = expr.target
        else:
            return expr.pos


# Loosest first, as DSL.md lists them.
_LEVEL = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4,
          "not in": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


def show(expr: n.Expr) -> str:
    """The expression as rule text in backquotes, for messages."""
    return f"`{_text(expr)}`"


def _text(expr: n.Expr, outer: int = 0) -> str:
    if isinstance(expr, n.Literal):
        return expr.text or _value_text(expr.value)
    if isinstance(expr, n.Field):
        root = "" if expr.root == "past" else expr.root
        return ".".join(([root] if root else []) + list(expr.path))
    if isinstance(expr, n.SegmentRef):
        return expr.name
    if isinstance(expr, n.ListExpr):
        return "[" + ", ".join(_text(item) for item in expr.items) + "]"
    if isinstance(expr, n.Member):
        return f"{_text(expr.target, 9)}.{expr.name}"
    if isinstance(expr, n.Call):
        return f"{expr.name}(" + ", ".join(_text(arg) for arg in expr.args) + ")"
    if isinstance(expr, n.Aggregate):
        target = ".".join((expr.event_type,) + expr.path)
        where = f" where {_text(expr.where)}" if expr.where is not None else ""
        window = expr.window_text or _duration(expr.window)
        return f"{expr.func}({target}{where} within {window})"
    if isinstance(expr, n.Unary):
        level = 3 if expr.op == "not" else 7
        text = ("not " if expr.op == "not" else "-") + _text(expr.operand, level)
        return f"({text})" if level < outer else text
    if isinstance(expr, n.Binary):
        level = _LEVEL.get(expr.op, 4)
        text = f"{_text(expr.left, level)} {expr.op} {_text(expr.right, level + 1)}"
        return f"({text})" if level < outer else text
    if isinstance(expr, n.IfExpr):
        text = f"if {_text(expr.cond)} then {_text(expr.then)} else {_text(expr.other)}"
        return f"({text})" if outer else text
    return "..."


def _value_text(value) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return repr(value)


def _duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"
