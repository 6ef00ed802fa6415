"""A syntax tree written back as rule text: what explanations, lint and editors show.

The tree keeps where each node starts, not its original spelling, so the text is the
node's canonical form: the rule's own words and operators, single spaces, and parentheses
only where the precedence needs them (``event.cart_value > 50``,
``count(page_view where category == "shoes" within 30m)``).
"""

from __future__ import annotations

from nba.dsl import nodes as n

# Binding strength, loosest first, as the language guide lists the operators.
_LEVEL = {
    "or": 1,
    "and": 2,
    "not": 3,
    "==": 4,
    "!=": 4,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "in": 4,
    "not in": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}
_UNARY_MINUS = 7
_POSTFIX = 8  # member access and calls
_DURATION_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60))


def source_text(expr: n.Expr, outer: int = 0) -> str:
    """``expr`` as rule text; ``outer`` is the binding strength of the context it sits in."""
    if isinstance(expr, n.Literal):
        return expr.text or value_text(expr.value)
    if isinstance(expr, n.Field):
        parts = ([] if expr.root == "past" else [expr.root]) + list(expr.path)
        return ".".join(parts)
    if isinstance(expr, n.SegmentRef):
        return expr.name
    if isinstance(expr, n.ListExpr):
        return "[" + ", ".join(source_text(item) for item in expr.items) + "]"
    if isinstance(expr, n.Member):
        return f"{source_text(expr.target, _POSTFIX)}.{expr.name}"
    if isinstance(expr, n.Call):
        return f"{expr.name}(" + ", ".join(source_text(arg) for arg in expr.args) + ")"
    if isinstance(expr, n.Aggregate):
        target = ".".join((expr.event_type, *expr.path))
        where = f" where {source_text(expr.where)}" if expr.where is not None else ""
        return f"{expr.func}({target}{where} within {expr.window_text or duration_text(expr.window)})"
    if isinstance(expr, n.Unary):
        if expr.op == "not":
            level, text = _LEVEL["not"], "not " + source_text(expr.operand, _LEVEL["not"])
        else:
            level, text = _UNARY_MINUS, "-" + source_text(expr.operand, _UNARY_MINUS)
        return f"({text})" if level < outer else text
    if isinstance(expr, n.Binary):
        level = _LEVEL.get(expr.op, 4)
        # left to right: the right operand of the same level needs parentheses
        text = f"{source_text(expr.left, level)} {expr.op} {source_text(expr.right, level + 1)}"
        return f"({text})" if level < outer else text
    if isinstance(expr, n.IfExpr):
        text = f"if {source_text(expr.cond)} then {source_text(expr.then)} else {source_text(expr.other)}"
        return f"({text})" if outer else text
    raise TypeError(f"not an expression: {expr!r}")


def value_text(value) -> str:
    """A constant as a literal of the language."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    return repr(value)


def duration_text(seconds: float) -> str:
    """``86400`` -> ``1d``: the largest unit that divides the duration."""
    for unit, size in _DURATION_UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"


def start_of(expr: n.Expr):
    """Where an expression's text starts (a binary operation's own place is its operator's)."""
    while True:
        if isinstance(expr, n.Binary):
            expr = expr.left
        elif isinstance(expr, n.Member):
            expr = expr.target
        else:
            return expr.pos
