"""The values one expression may take, as a set the linter can intersect and complement.

A rule's condition talks about *subjects*: an event or profile field, or any other
expression the linter does not look into (a call, an aggregate, arithmetic). Within one
decision a subject has one value, whatever the number of times the condition reads it.
``Domain`` is a set of such values, split by kind the way ``dsl.runtime`` compares them:

- ``null``;
- booleans (a ``bool`` is never a number: ``true == 1`` is false);
- numbers, as a union of intervals with open or closed ends (``1 == 1.0``), plus NaN,
  which no comparison holds for (a NaN can come from an undeclared field of an event);
- strings, as a union of intervals under code-point order (a string is a point);
- ``other``: lists, maps, anything else (no atom of the linter can hold for them).

Every set here may be larger than the values a real decision can reach (the string
interval between ``"a"`` and ``"a\\x00"`` holds no string, but is not empty here): the
linter only warns when a set is *empty*, so a set too large can hide a warning, never
make a false one.
"""

from __future__ import annotations

# An interval is (low, low_closed, high, high_closed); None as a bound is unbounded (and
# then its "closed" flag is False). A set of intervals is a sorted tuple of disjoint ones.
Interval = tuple
ALL_VALUES: tuple = ((None, False, None, False),)
NO_VALUES: tuple = ()


def _empty(iv: Interval) -> bool:
    lo, lc, hi, hc = iv
    if lo is None or hi is None:
        return False
    return lo > hi or (lo == hi and not (lc and hc))


def _lower_key(iv: Interval):
    """Sort key of an interval's low end: unbounded first, then closed before open."""
    lo, lc = iv[0], iv[1]
    return (0, 0, 0) if lo is None else (1, lo, 0 if lc else 1)


def normalize(intervals) -> tuple:
    """Sorted, disjoint, non-empty intervals; touching ones are joined."""
    items = sorted((iv for iv in intervals if not _empty(iv)), key=_lower_key)
    out: list[list] = []
    for lo, lc, hi, hc in items:
        if out:
            plo, plc, phi, phc = out[-1]
            # Does this interval start inside the previous one or right where it ends?
            if phi is None or lo is None or lo < phi or (lo == phi and (lc or phc)):
                if phi is not None and (hi is None or hi > phi or (hi == phi and hc)):
                    out[-1][2], out[-1][3] = hi, hc
                continue
        out.append([lo, lc, hi, hc])
    return tuple(tuple(iv) for iv in out)


def intersect_intervals(a: tuple, b: tuple) -> tuple:
    if a is ALL_VALUES:
        return b
    if b is ALL_VALUES:
        return a
    out = []
    for alo, alc, ahi, ahc in a:
        for blo, blc, bhi, bhc in b:
            if alo is None:
                lo, lc = blo, blc
            elif blo is None or alo > blo:
                lo, lc = alo, alc
            elif blo > alo:
                lo, lc = blo, blc
            else:
                lo, lc = alo, alc and blc
            if ahi is None:
                hi, hc = bhi, bhc
            elif bhi is None or ahi < bhi:
                hi, hc = ahi, ahc
            elif bhi < ahi:
                hi, hc = bhi, bhc
            else:
                hi, hc = ahi, ahc and bhc
            iv = (lo, lc, hi, hc)
            if not _empty(iv):
                out.append(iv)
    return normalize(out)


def complement_intervals(a: tuple) -> tuple:
    if not a:
        return ALL_VALUES
    out = []
    lo, lc = None, False
    for ilo, ilc, ihi, ihc in a:
        if ilo is not None:
            out.append((lo, lc, ilo, not ilc))
        if ihi is None:
            return normalize(out)
        lo, lc = ihi, not ihc
    out.append((lo, lc, None, False))
    return normalize(out)


def point(value) -> tuple:
    return ((value, True, value, True),)


def below(value, closed: bool) -> tuple:
    return ((None, False, value, closed),)


def above(value, closed: bool) -> tuple:
    return ((value, closed, None, False),)


BOOL_FALSE, BOOL_TRUE = 1, 2  # bit set of the booleans a domain holds


class Domain:
    """A set of values of one subject (see the module's docstring)."""

    __slots__ = ("null", "bools", "nums", "nan", "strs", "other")

    def __init__(self, null=False, bools=0, nums=NO_VALUES, nan=False, strs=NO_VALUES, other=False):
        self.null = null
        self.bools = bools
        self.nums = nums
        self.nan = nan
        self.strs = strs
        self.other = other

    def is_empty(self) -> bool:
        return not (self.null or self.bools or self.nums or self.nan or self.strs or self.other)

    def __and__(self, o: "Domain") -> "Domain":
        return Domain(
            self.null and o.null,
            self.bools & o.bools,
            intersect_intervals(self.nums, o.nums) if self.nums and o.nums else NO_VALUES,
            self.nan and o.nan,
            intersect_intervals(self.strs, o.strs) if self.strs and o.strs else NO_VALUES,
            self.other and o.other,
        )

    def __or__(self, o: "Domain") -> "Domain":
        return Domain(
            self.null or o.null,
            self.bools | o.bools,
            normalize(self.nums + o.nums),
            self.nan or o.nan,
            normalize(self.strs + o.strs),
            self.other or o.other,
        )

    def __invert__(self) -> "Domain":
        return Domain(
            not self.null,
            3 & ~self.bools,
            complement_intervals(self.nums),
            not self.nan,
            complement_intervals(self.strs),
            not self.other,
        )

    def __eq__(self, o) -> bool:
        return isinstance(o, Domain) and all(getattr(self, s) == getattr(o, s) for s in Domain.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, s) for s in Domain.__slots__))

    def __repr__(self) -> str:
        parts = [f"{s}={getattr(self, s)!r}" for s in Domain.__slots__ if getattr(self, s)]
        return "Domain(" + ", ".join(parts) + ")"


ANYTHING = Domain(True, 3, ALL_VALUES, True, ALL_VALUES, True)
NOTHING = Domain()
NULL = Domain(null=True)
TRUE = Domain(bools=BOOL_TRUE)
FALSE_OR_NULL = Domain(null=True, bools=BOOL_FALSE)


def equal_to(value) -> Domain | None:
    """The values ``v`` with ``v == value`` (DSL.md: other kinds are unequal); None when the
    linter does not model ``value`` (a list, a map, NaN)."""
    if value is None:
        return NULL
    if value is True or value is False:
        return Domain(bools=BOOL_TRUE if value else BOOL_FALSE)
    if value.__class__ in (int, float):
        if value != value:  # NaN equals nothing, itself included
            return None
        return Domain(nums=point(value))
    if value.__class__ is str:
        return Domain(strs=point(value))
    return None


def ordered(op: str, value) -> tuple[Domain, Domain] | None:
    """``v OP value`` for ``< <= > >=``: (the values for which it is true, those for which it
    is false). Anything else raises a decision-time error (dsl.runtime._ordered)."""
    if value is None:  # a comparison with null is false, whatever the other side
        return NOTHING, ANYTHING
    if value.__class__ in (int, float):
        if value != value:
            return None
        true = _range(op, value)
        return Domain(nums=true), Domain(null=True, nan=True, nums=complement_intervals(true))
    if value.__class__ is str:
        true = _range(op, value)
        return Domain(strs=true), Domain(null=True, strs=complement_intervals(true))
    return NOTHING, NULL  # a bool, a list: an error unless the other side is null


def _range(op: str, value) -> tuple:
    if op == "<":
        return below(value, False)
    if op == "<=":
        return below(value, True)
    if op == ">":
        return above(value, False)
    return above(value, True)
