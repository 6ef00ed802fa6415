"""Constant folding: subexpressions whose value is known when the rules load become literals.

The compiler also folds ``event.type`` into a literal when it compiles the rules that an
event type's index holds, so ``event.type == "cart_abandoned"`` costs nothing there.
Folding uses the runtime's own operators, so a folded expression means what it did.
"""

from __future__ import annotations

from nba.dsl import nodes as n
from nba.dsl.twins import runtime as rt

_FOLDABLE_CALLS = frozenset(rt.FUNCTIONS) - {"matches"}


def fold(expr: n.Expr, event_type: str | None = None) -> n.Expr:
    return _Folder(event_type).fold(expr)


def _literal(like: n.Expr, value) -> n.Literal:
    return n.Literal(like.pos, value, repr(value))


class _Folder:
    def __init__(self, event_type: str | None):
        self.event_type = event_type

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
            try:
                value = (not rt.truth(operand.value)) if expr.op == "not" else rt.neg(operand.value)
            except rt.EvalError:
                return n.Unary(expr.pos, expr.op, operand)
            return _literal(expr, value)
        return n.Unary(expr.pos, expr.op, operand)

    def fold_Binary(self, expr: n.Binary) -> n.Expr:
        left = self.fold(expr.left)
        right = self.fold(expr.right)
        if expr.op in ("and", "or"):
            return self.fold_logic(expr, left, right)
        if isinstance(left, n.Literal) and isinstance(right, n.Literal):
            try:
                return _literal(expr, rt.BINARY[expr.op](left.value, right.value))
            except rt.EvalError:
                pass
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
            try:
                return _literal(expr, rt.FUNCTIONS[expr.name](*(arg.value for arg in args)))
            except (rt.EvalError, TypeError):
                pass
        return n.Call(expr.pos, expr.name, args)

    def fold_Aggregate(self, expr: n.Aggregate) -> n.Expr:
        if expr.where is None:
            return expr
        return n.Aggregate(expr.pos, expr.func, expr.event_type, expr.path, self.fold(expr.where), expr.window)
