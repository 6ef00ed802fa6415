"""A bucket's `when` conditions in a compact form, for the Cython matcher (dsl/_matchvm.pyx).

The generated Python matchers (dsl/compiler.py) are the pure-Python twin; this is the
form the compiled twin interprets. A condition becomes a flat list of nodes in prefix
order, each ``(kind, size, slot, op, number, obj, obj2, obj3)`` where ``size`` counts the
nodes of its subtree (so an evaluator can skip a subtree it does not need):

- ``and`` / ``or`` / ``not`` over sub-conditions, ``true`` and ``false``;
- atoms on one event or profile field against a literal, the forms ``dsl/codegen.py``
  gives an inline fast path (comparisons with a number or a string, ``==``/``!=`` with a
  literal, ``in``/``not in`` a list of strings, a field used as a condition);
- everything else (aggregates, segments, functions, arithmetic, nested paths) as a call
  of a generated Python function that evaluates that sub-condition exactly as the
  generated matcher does.

Each atom records the ``dsl.runtime`` helper the generated code calls in the unusual case
(a null, a value of another kind), so both twins give the same results and the same
error messages. Fields are read through per-bucket slots, each loaded at most once per
decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from nba.dsl import nodes as n
from nba.dsl.codegen import is_sure_bool
from nba.dsl.twins import runtime as rt

# Node kinds (dsl/_matchvm.pyx has the same numbers).
FALSE, TRUE, AND, OR, NOT, PYTHON, NUMBER_ORDER, STRING_ORDER, STRING_EQ, NUMBER_EQ, IS, IN_STRINGS, TRUTH, EQ_BOUND = (
    range(14)
)

# Comparison operators, as CPython's rich comparison codes (Py_LT ... Py_GE).
RICH = {"<": 0, "<=": 1, "==": 2, "!=": 3, ">": 4, ">=": 5}
_ORDER_HELPERS = {"<": rt.lt, "<=": rt.le, ">": rt.gt, ">=": rt.ge}
EXACT_FLOAT_INTEGERS = 2**53  # whole numbers up to this convert to a float exactly

# Slot roots: which dict a slot reads, the event time, or (in an aggregate's `where`) a
# column of the past events or a value of the decision's own (an event or profile field,
# the event time) that the `where` compares them with.
EVENT, PROFILE, TIME, PAST, BOUND = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Entry:
    rule: int  # the rule's index in the ruleset
    active_from: float
    active_to: float
    node: int  # where its condition starts in ``BucketPlan.nodes``


@dataclass(frozen=True, slots=True)
class BucketPlan:
    slots: tuple[tuple[int, str], ...]  # (root, field name)
    nodes: tuple[tuple, ...]
    entries: tuple[Entry, ...]  # in the order the bucket tests its rules


class PlanBuilder:
    """Builds one bucket's plan. ``python_condition(expr, what)`` returns the name of a
    generated function ``(x) -> bool`` for a sub-condition the plan has no atom for; the
    names are replaced by the functions once the module is compiled (``resolve``)."""

    def __init__(
        self,
        python_condition: Callable[[n.Expr, str], str],
        past: bool = False,
        segments: dict[str, n.Expr] | None = None,
    ):
        self.python_condition = python_condition
        self.past = past  # fields are the past events' (an aggregate's `where`)
        # segment -> its folded condition; a segment made of atoms alone is tested in place
        self.segments = segments or {}
        self.slots: dict[tuple[int, str], int] = {}
        self.nodes: list[tuple] = []
        self.entries: list[Entry] = []

    def add_rule(
        self, rule: int, condition: n.Expr, active_from: float, active_to: float, what: str = "`when`"
    ) -> None:
        start = len(self.nodes)
        self.condition(condition, what)
        self.entries.append(Entry(rule, active_from, active_to, start))

    def plan(self) -> BucketPlan:
        return BucketPlan(tuple(self.slots), tuple(self.nodes), tuple(self.entries))

    # -- conditions --

    def condition(self, expr: n.Expr, what: str) -> None:
        """Appends the nodes of ``expr`` used as a condition (as ``ExprGen.cond`` does)."""
        if isinstance(expr, n.Binary) and expr.op in ("and", "or"):
            self.logic(expr)
        elif isinstance(expr, n.Unary) and expr.op == "not":
            self.nested(NOT, [(expr.operand, "`not`")])
        elif isinstance(expr, n.Literal) and (expr.value is None or isinstance(expr.value, bool)):
            self.nodes.append((TRUE if expr.value is True else FALSE, 1, 0, 0, 0.0, None, None, None))
        elif isinstance(expr, n.SegmentRef) and self.all_atoms(expr.name):
            # as its generated function tests it (`gen.cond(..., "a segment")`), so the
            # same values hold and the same errors are raised; a segment's value is only
            # ever its condition's, so testing it in place instead of once per decision
            # changes nothing but the cost
            self.condition(self.segments[expr.name], "a segment")
        elif not is_sure_bool(expr) and self.simple_field(expr):
            self.atom(TRUTH, self.slot(expr), 0, 0.0, what, rt.truth)
        elif not (isinstance(expr, n.Binary) and self.comparison(expr)):
            self.nodes.append((PYTHON, 1, 0, 0, 0.0, self.python_condition(expr, what), None, None))

    def all_atoms(self, segment: str) -> bool:
        """True when the segment's condition (its segments too) needs no Python."""
        condition = self.segments.get(segment)
        if condition is None:
            return False
        try:
            PlanBuilder(no_python, self.past, self.segments).condition(condition, "a segment")
        except NoAtoms:
            return False
        return True

    def logic(self, expr: n.Binary) -> None:
        """``a and b and c`` (parsed ``(a and b) and c``) becomes one node with three
        operands, each a condition as ``ExprGen.logic`` makes it."""
        what = f"`{expr.op}`"
        operands: list[n.Expr] = []
        pending = [expr]
        while pending:
            item = pending.pop()
            while isinstance(item, n.Binary) and item.op == expr.op:
                if isinstance(item.left, n.Literal) and isinstance(item.left.value, bool):
                    item = item.right  # folded: `true and X` / `false or X` is X
                    continue
                pending.append(item.right)
                item = item.left
            operands.append(item)
        if len(operands) == 1:
            self.condition(operands[0], what)
            return
        self.nested(AND if expr.op == "and" else OR, [(operand, what) for operand in operands])

    def nested(self, kind: int, children: list[tuple[n.Expr, str]]) -> None:
        at = len(self.nodes)
        self.nodes.append(None)
        for child, what in children:
            self.condition(child, what)
        self.nodes[at] = (kind, len(self.nodes) - at, len(children), 0, 0.0, None, None, None)

    def comparison(self, expr: n.Binary) -> bool:
        """Appends an atom for ``expr`` when it has one; False when it has none."""
        op, left, right = expr.op, expr.left, expr.right
        if op in ("==", "!=") and self.past and self.bound_equality(op, left, right):
            return True
        if op in ("==", "!="):
            if isinstance(left, n.Literal) and not isinstance(right, n.Literal):
                left, right = right, left
            if not (self.simple_field(left) and isinstance(right, n.Literal)):
                return False
            value, negate = right.value, int(op == "!=")
            if value is None or isinstance(value, bool):
                self.atom(IS, self.slot(left), negate, 0.0, value)
            elif isinstance(value, str):
                self.atom(STRING_EQ, self.slot(left), negate, 0.0, value)
            elif rt.is_number(value) and exact_float(value):
                self.atom(NUMBER_EQ, self.slot(left), negate, float(value), value)
            else:
                return False
            return True
        if op in _ORDER_HELPERS:
            if not (self.simple_field(left) and isinstance(right, n.Literal)):
                return False
            value = right.value
            if rt.is_number(value) and exact_float(value):
                self.atom(NUMBER_ORDER, self.slot(left), RICH[op], float(value), value, _ORDER_HELPERS[op])
            elif isinstance(value, str):
                self.atom(STRING_ORDER, self.slot(left), RICH[op], 0.0, value, _ORDER_HELPERS[op])
            else:
                return False
            return True
        if op in ("in", "not in"):
            if not (self.simple_field(left) and isinstance(right, n.Literal)):
                return False
            items = right.value
            if not (isinstance(items, list) and items and all(isinstance(item, str) for item in items)):
                return False
            helper = rt.member if op == "in" else rt.not_member
            self.atom(IN_STRINGS, self.slot(left), int(op == "not in"), 0.0, frozenset(items), items, helper)
            return True
        return False

    def bound_equality(self, op: str, left: n.Expr, right: n.Expr) -> bool:
        """``past.f == event.g`` (either way round, or ``!=``): an EQ_BOUND atom, the
        decision's value in a BOUND slot (whose index the atom keeps in ``number``)."""

        def decision_field(expr):
            return isinstance(expr, n.Field) and expr.root in ("event", "profile") and len(expr.path) == 1

        if self.simple_field(left) and decision_field(right):
            past, own = left, right
        elif decision_field(left) and self.simple_field(right):
            past, own = right, left
        else:
            return False
        # `!=` is `not ==` (runtime.ne), and `==` is symmetric (runtime.eq)
        self.atom(EQ_BOUND, self.slot(past), int(op == "!="), float(self.slot(own, bound=True)), None, rt.eq)
        return True

    def atom(self, kind: int, slot: int, op: int, number: float, obj=None, obj2=None, obj3=None) -> None:
        self.nodes.append((kind, 1, slot, op, number, obj, obj2, obj3))

    # -- fields --

    def simple_field(self, expr: n.Expr) -> bool:
        if not (isinstance(expr, n.Field) and len(expr.path) == 1):
            return False
        if self.past:
            return expr.root == "past" and expr.path[0] != "type"
        return expr.root in ("event", "profile")

    def slot(self, field: n.Field, bound: bool = False) -> int:
        name = field.path[0]
        if bound:
            key = (BOUND, f"{field.root}.{name}")
        elif field.root == "past":
            key = (PAST, name)
        elif field.root == "event":
            key = (TIME, "time") if name == "time" else (EVENT, name)
        else:
            key = (PROFILE, name)
        found = self.slots.get(key)
        if found is None:
            found = self.slots[key] = len(self.slots)
        return found


class NoAtoms(Exception):
    """A `where` the row filter cannot test without calling Python."""


def no_python(_expr: n.Expr, _what: str) -> str:
    raise NoAtoms


def where_plan(where: n.Expr) -> BucketPlan | None:
    """The plan of an aggregate's `where` for the Cython row filter (slots are the past
    events' columns), or None when some part of it needs Python (an event field, a
    function, arithmetic): the generated loop tests that `where`."""
    builder = PlanBuilder(no_python, past=True)
    try:
        builder.add_rule(0, where, -math.inf, math.inf, "`where`")
    except NoAtoms:
        return None
    return builder.plan()


def exact_float(value) -> bool:
    """True when the number converts to a float and back without change."""
    if isinstance(value, float):
        return math.isfinite(value)
    return -EXACT_FLOAT_INTEGERS <= value <= EXACT_FLOAT_INTEGERS


def resolve(plan: BucketPlan, namespace: dict) -> BucketPlan:
    """The plan with each Python sub-condition's function name replaced by the function."""
    nodes = tuple(node[:5] + (namespace[node[5]],) + node[6:] if node[0] == PYTHON else node for node in plan.nodes)
    return BucketPlan(plan.slots, nodes, plan.entries)
