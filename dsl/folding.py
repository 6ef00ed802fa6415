"""Constant folding: subexpressions whose value is known when the rules load become literals.

The compiler also folds ``event.type`` into a literal when it compiles the rules that an
event type's index holds, so ``event.type == "cart_abandoned"`` costs nothing there.
Folding uses the runtime's own operators, so a folded expression means what it did.
"""

from __future__ import annotations

from typing import Callable

from nba.dsl import nodes as n
from nba.dsl.source import Position
from nba.dsl.syntax import TOO_LARGE, in_number_range
from nba.dsl.twins import runtime as rt

_FOLDABLE_CALLS = frozenset(rt.FUNCTIONS) - {"matches"}

Report = Callable[[Position, str], None]


def fold(expr: n.Expr, event_type: str | None = None, report: Report | None = None) -> n.Expr:
    """``expr`` with its constant subexpressions computed. A constant whose value is out of
    the range of numbers (DSL: within ±1.8e308), or whose computation overflows, is left
    as it is and given to ``report`` (position, message) when there is one."""
    return _Folder(event_type, report).fold(expr)


def report_constant_errors(checked, report: Report) -> None:
    """Report every constant expression of a checked ruleset that gives a number out of
    range (``1.5 * 1e300 * 1e300``, ``days(...)`` of a huge number): it could only fail,
    or give an infinity, at every decision."""
    folder = _Folder(None, report)
    expressions = [segment.condition for segment in checked.segments.values()]
    for rule in checked.rules:
        expressions += [rule.when, rule.priority]
        if rule.then is not None:
            expressions += [expr for _name, expr, _pos in rule.then.params]
    for update in checked.on_updates:
        expressions.append(update.condition)
        expressions += [item.value for item in update.sets]
    if checked.default is not None:
        expressions += [expr for _name, expr, _pos in checked.default.then.params]
    for expr in expressions:
        if expr is not None:
            folder.fold(expr)


def _literal(like: n.Expr, value) -> n.Literal:
    return n.Literal(like.pos, value, repr(value))


class _Folder:
    def __init__(self, event_type: str | None, report: Report | None = None):
        self.event_type = event_type
        self.report = report

    def constant(self, like: n.Expr, compute: Callable, *args) -> n.Literal | None:
        """The literal of ``compute(*args)``, or None when it is not a constant: an
        EvalError (left for decision time, where the trace names it) or a number out of
        range (reported)."""
        try:
            value = compute(*args)
        except (rt.EvalError, TypeError, ValueError):  # (the last two: `min()`, which the checker reported)
            return None
        except ArithmeticError:  # OverflowError: a whole number too large for a float, ...
            self.out_of_range(like)
            return None
        if (value.__class__ is int or value.__class__ is float) and not in_number_range(value):
            self.out_of_range(like)
            return None
        return _literal(like, value)

    def out_of_range(self, expr: n.Expr) -> None:
        if self.report is None:
            return
        what = (
            f"`{expr.name}(...)`"
            if isinstance(expr, n.Call)
            else f"`{expr.op}`"
            if isinstance(expr, (n.Binary, n.Unary))
            else "this"
        )
        self.report(expr.pos, f"the result of {what} {TOO_LARGE}")

    def fold(self, expr: n.Expr) -> n.Expr:
        method = getattr(self, f"fold_{type(expr).__name__}", None)
        return method(expr) if method else expr

    def fold_Field(self, expr: n.Field) -> n.Expr:
        if self.event_type is not None and expr.root == "event" and expr.path == ("type",):
            return _literal(expr, self.event_type)
        return expr

    def fold_ListExpr(self, expr: n.ListExpr) -> n.Expr:
        items = tuple(self.fold(item) for item in expr.items)
        if all(isinstance(item, n.Literal) for item in items):
            return _literal(expr, [item.value for item in items])
        return n.ListExpr(expr.pos, items)

    def fold_Member(self, expr: n.Member) -> n.Expr:
        target = self.fold(expr.target)
        if isinstance(target, n.Literal):
            return _literal(expr, rt.get(target.value, expr.name))
        return n.Member(expr.pos, target, expr.name)

    def fold_Unary(self, expr: n.Unary) -> n.Expr:
        operand = self.fold(expr.operand)
        if isinstance(operand, n.Literal):
            if expr.op == "not":
                found = self.constant(expr, lambda value: not rt.truth(value), operand.value)
            else:
                found = self.constant(expr, rt.neg, operand.value)
            if found is not None:
                return found
        return n.Unary(expr.pos, expr.op, operand)

    def fold_Binary(self, expr: n.Binary) -> n.Expr:
        left = self.fold(expr.left)
        right = self.fold(expr.right)
        if expr.op in ("and", "or"):
            return self.fold_logic(expr, left, right)
        if isinstance(left, n.Literal) and isinstance(right, n.Literal):
            found = self.constant(expr, rt.BINARY[expr.op], left.value, right.value)
            if found is not None:
                return found
        return n.Binary(expr.pos, expr.op, left, right)

    def fold_logic(self, expr: n.Binary, left: n.Expr, right: n.Expr) -> n.Expr:
        """``false and X`` is false and ``true or X`` is true; the left side decides first."""
        if isinstance(left, n.Literal):
            try:
                known = rt.truth(left.value)
            except rt.EvalError:
                return n.Binary(expr.pos, expr.op, left, right)
            if expr.op == "and" and not known:
                return _literal(expr, False)
            if expr.op == "or" and known:
                return _literal(expr, True)
            if isinstance(right, n.Literal):
                try:
                    return _literal(expr, rt.truth(right.value))
                except rt.EvalError:
                    pass
            # `true and X` / `false or X` is X as a condition.
            return n.Binary(expr.pos, expr.op, _literal(left, expr.op == "and"), right)
        return n.Binary(expr.pos, expr.op, left, right)

    def fold_IfExpr(self, expr: n.IfExpr) -> n.Expr:
        cond = self.fold(expr.cond)
        then = self.fold(expr.then)
        other = self.fold(expr.other)
        if isinstance(cond, n.Literal):
            try:
                return then if rt.truth(cond.value) else other
            except rt.EvalError:
                pass
        return n.IfExpr(expr.pos, cond, then, other)

    def fold_Call(self, expr: n.Call) -> n.Expr:
        args = tuple(self.fold(arg) for arg in expr.args)
        if expr.name in _FOLDABLE_CALLS and all(isinstance(arg, n.Literal) for arg in args):
            found = self.constant(expr, rt.FUNCTIONS[expr.name], *(arg.value for arg in args))
            if found is not None:
                return found
        return n.Call(expr.pos, expr.name, args)

    def fold_Aggregate(self, expr: n.Aggregate) -> n.Expr:
        if expr.where is None:
            return expr
        return n.Aggregate(
            expr.pos, expr.func, expr.event_type, expr.path, self.fold(expr.where), expr.window, expr.window_text
        )
