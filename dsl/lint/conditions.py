"""Conditions as sets of decisions: when a condition is true, and when it is false.

A condition is turned into two formulas in disjunctive normal form over *subjects*
(``domains.py``): ``true`` (the states in which it evaluates to true, so a rule with it as
its `when` matches) and ``false`` (it evaluates to false or null, without an error). Both
are needed because of DSL.md's semantics: ``not C`` is true where ``C`` is false or null,
but not where ``C`` raises a decision-time error (a string compared with a number), and
``and``/``or`` short-circuit, so an error on their right only counts when the left did not
decide:

    true(a and b) = true(a) & true(b)      false(a and b) = false(a) | true(a) & false(b)
    true(a or b)  = true(a) | false(a) & true(b)      false(a or b) = false(a) & false(b)
    true(not a)   = false(a)               false(not a)   = true(a)

A conjunction is a dict ``subject key -> Domain``; a subject missing from it may take any
value. Conjunctions with an empty domain are dropped as they are made, so a formula with
no conjunction is unsatisfiable.

What the linter does not model (a call, arithmetic, an aggregate, a comparison of two
fields, an ``in`` a string) is a subject of its own, keyed by its structure without
places: the same expression twice in one decision has one value, so ``len(event.s) > 3
and len(event.s) < 2`` is still seen to be contradictory. Two subjects are taken to be
independent even when they are not (``event.x`` and ``event.x + 1``): that admits more
states than a decision can reach, which can hide a warning but never make a false one.
A formula that would grow past ``MAX_TERMS`` conjunctions is replaced by an opaque subject
of its own, for the same reason.
"""

from __future__ import annotations

from nba.dsl import nodes as n
from nba.dsl.folding import fold
from nba.dsl.lint.domains import FALSE_OR_NULL, TRUE, Domain, equal_to, ordered

MAX_TERMS = 64

Conj = dict  # subject key -> Domain
DNF = list  # of Conj

ALWAYS: DNF = [{}]
NEVER: DNF = []

_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class TooComplex(Exception):
    pass


def key_of(expr: n.Expr):
    """A hashable key of an expression's structure, without the places it was written."""
    if isinstance(expr, n.Literal):
        value = expr.value
        return ("lit", value.__class__.__name__, repr(value))
    if isinstance(expr, n.Field):
        return ("field", expr.root) + expr.path
    if isinstance(expr, n.SegmentRef):
        return ("segment", expr.name)
    if isinstance(expr, n.ListExpr):
        return ("list",) + tuple(key_of(item) for item in expr.items)
    if isinstance(expr, n.Member):
        return ("member", key_of(expr.target), expr.name)
    if isinstance(expr, n.Unary):
        return ("unary", expr.op, key_of(expr.operand))
    if isinstance(expr, n.Binary):
        return ("binary", expr.op, key_of(expr.left), key_of(expr.right))
    if isinstance(expr, n.IfExpr):
        return ("if", key_of(expr.cond), key_of(expr.then), key_of(expr.other))
    if isinstance(expr, n.Call):
        return ("call", expr.name) + tuple(key_of(arg) for arg in expr.args)
    if isinstance(expr, n.Aggregate):
        where = None if expr.where is None else key_of(expr.where)
        return ("aggregate", expr.func, expr.event_type, expr.path, where, expr.window)
    return ("node", id(expr))  # unknown: a subject equal to nothing else


def conj_and(a: Conj, b: Conj) -> Conj | None:
    """Both conjunctions, or None when they exclude each other."""
    if len(a) < len(b):
        a, b = b, a
    out = dict(a)
    for key, dom in b.items():
        have = out.get(key)
        if have is not None:
            dom = have & dom
            if dom.is_empty():
                return None
        out[key] = dom
    return out


def dnf_and(a: DNF, b: DNF) -> DNF:
    if not a or not b:
        return NEVER
    out = []
    for x in a:
        for y in b:
            both = conj_and(x, y)
            if both is not None:
                out.append(both)
                if len(out) > MAX_TERMS:
                    raise TooComplex
    return out


def dnf_or(a: DNF, b: DNF) -> DNF:
    if len(a) + len(b) > MAX_TERMS:
        raise TooComplex
    return a + b


def atom(key, true: Domain, false: Domain) -> tuple[DNF, DNF]:
    return ([{key: true}] if not true.is_empty() else NEVER), ([{key: false}] if not false.is_empty() else NEVER)


class Conditions:
    """Turns the conditions of one checked ruleset into (true, false) formulas."""

    def __init__(self, segments: dict[str, n.Segment]):
        self.segments = segments
        self._segment_cache: dict[str, tuple[DNF, DNF]] = {}
        self._inlining: set[str] = set()

    def of(self, expr: n.Expr, folded: bool = False) -> tuple[DNF, DNF]:
        """(true, false) of a condition (folded first unless ``folded``)."""
        return self.cond(expr if folded else fold(expr))

    def cond(self, expr: n.Expr) -> tuple[DNF, DNF]:
        try:
            return self._cond(expr)
        except TooComplex:
            return self.opaque(expr)

    def opaque(self, expr: n.Expr) -> tuple[DNF, DNF]:
        """A condition the linter does not look into: true where its value is true, false
        where it is false or null, an error anywhere else (dsl.runtime.truth)."""
        return atom(key_of(expr), TRUE, FALSE_OR_NULL)

    def _cond(self, expr: n.Expr) -> tuple[DNF, DNF]:
        if isinstance(expr, n.Literal):
            if expr.value is True:
                return ALWAYS, NEVER
            if expr.value is False or expr.value is None:
                return NEVER, ALWAYS
            return NEVER, NEVER  # a number or a string as a condition is an error
        if isinstance(expr, n.Unary) and expr.op == "not":
            true, false = self.cond(expr.operand)
            return false, true
        if isinstance(expr, n.Binary):
            if expr.op == "and":
                lt, lf = self.cond(expr.left)
                rt, rf = self.cond(expr.right)
                return dnf_and(lt, rt), dnf_or(lf, dnf_and(lt, rf))
            if expr.op == "or":
                lt, lf = self.cond(expr.left)
                rt, rf = self.cond(expr.right)
                return dnf_or(lt, dnf_and(lf, rt)), dnf_and(lf, rf)
            if expr.op in _COMPARISONS:
                return self.comparison(expr)
        if isinstance(expr, n.IfExpr):
            ct, cf = self.cond(expr.cond)
            tt, tf = self.cond(expr.then)
            ot, of = self.cond(expr.other)
            return dnf_or(dnf_and(ct, tt), dnf_and(cf, ot)), dnf_or(dnf_and(ct, tf), dnf_and(cf, of))
        if isinstance(expr, n.SegmentRef) and expr.name in self.segments:
            return self.segment(expr.name)
        return self.opaque(expr)

    def segment(self, name: str) -> tuple[DNF, DNF]:
        """A segment used as a condition is its condition (errors included: dsl/compiler.py)."""
        found = self._segment_cache.get(name)
        if found is None:
            if name in self._inlining:  # a cycle is a load error; never here, but never loop
                raise TooComplex
            self._inlining.add(name)
            try:
                found = self.cond(fold(self.segments[name].condition))
            finally:
                self._inlining.discard(name)
            self._segment_cache[name] = found
        return found

    def comparison(self, expr: n.Binary) -> tuple[DNF, DNF]:
        op, left, right = expr.op, expr.left, expr.right
        if op in _FLIPPED and isinstance(left, n.Literal) and not isinstance(right, n.Literal):
            op, left, right = _FLIPPED[op], right, left
        if isinstance(left, n.Literal) or not isinstance(right, n.Literal):
            return self.opaque(expr)  # two subjects, or two constants folding left alone
        subject, value = key_of(left), right.value
        if op in ("==", "!="):
            equal = equal_to(value)
            if equal is None:
                return self.opaque(expr)
            if op == "==":
                return atom(subject, equal, ~equal)  # `==` and `!=` never raise
            return atom(subject, ~equal, equal)
        if op in ("in", "not in"):
            if not isinstance(value, list):
                return self.opaque(expr)  # `in` a string looks for a substring
            members = Domain()
            for item in value:
                if item is None:
                    continue  # `null in [null]` is false: a comparison with null
                equal = equal_to(item)
                if equal is None:
                    return self.opaque(expr)
                members = members | equal
            outside = ~members
            outside.null = False
            if op == "in":
                # null is never a member; nothing raises with a list on the right
                return atom(subject, members, outside | _NULL)
            return atom(subject, outside, members | _NULL)  # `null not in [...]` is false too
        found = ordered(op, value)
        if found is None:
            return self.opaque(expr)
        return atom(subject, *found)


_NULL = Domain(null=True)
