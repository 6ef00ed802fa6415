"""The interval algebra under lint (dsl/lint/domains.py) against plain membership tests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nba.dsl.lint.domains import (
    ANYTHING,
    Domain,
    complement_intervals,
    equal_to,
    intersect_intervals,
    normalize,
    ordered,
)
from nba.dsl.runtime import EvalError, ge, gt, le, lt

POINTS = [x / 2 for x in range(-4, 14)]  # -2 ... 6.5, between and on the bounds


def bound():
    return st.one_of(st.none(), st.integers(-1, 6))


@st.composite
def interval(draw):
    lo, hi = draw(bound()), draw(bound())
    return (lo, lo is not None and draw(st.booleans()), hi, hi is not None and draw(st.booleans()))


intervals = st.lists(interval(), max_size=4)


def inside(x, iv) -> bool:
    lo, lc, hi, hc = iv
    above_low = lo is None or x > lo or (x == lo and lc)
    below_high = hi is None or x < hi or (x == hi and hc)
    return above_low and below_high


def member(x, ivs) -> bool:
    return any(inside(x, iv) for iv in ivs)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(intervals, intervals)
def test_interval_sets_hold_the_points_they_should(a, b):
    na, nb = normalize(a), normalize(b)
    for x in POINTS:
        assert member(x, na) == member(x, a)
        assert member(x, intersect_intervals(na, nb)) == (member(x, a) and member(x, b))
        assert member(x, complement_intervals(na)) == (not member(x, a))
        assert member(x, normalize(na + nb)) == (member(x, a) or member(x, b))
    # normalized: sorted, disjoint, not touching
    for (_lo1, _lc1, hi1, hc1), (lo2, lc2, _hi2, _hc2) in zip(na, na[1:]):
        assert hi1 is not None and lo2 is not None
        assert hi1 < lo2 or (hi1 == lo2 and not hc1 and not lc2)


VALUES = [None, True, False, -1, 0, 0.5, 1, 1.0, 2, float("nan"), "", "a", "b", [1], {"a": 1}]


def contains(dom: Domain, value) -> bool:
    if value is None:
        return dom.null
    if value is True or value is False:
        return bool(dom.bools & (2 if value else 1))
    if isinstance(value, (int, float)):
        return dom.nan if value != value else member(value, dom.nums)
    if isinstance(value, str):
        return member(value, dom.strs)
    return dom.other


def test_equality_and_ordering_domains_agree_with_the_runtime():
    from nba.dsl.runtime import eq

    for constant in [None, True, 0, 1, 1.5, "a", "b"]:
        equal = equal_to(constant)
        for value in VALUES:
            assert contains(equal, value) == eq(value, constant), (value, constant)
            assert contains(~equal, value) == (not eq(value, constant))
        for op, fn in (("<", lt), ("<=", le), (">", gt), (">=", ge)):
            true, false = ordered(op, constant)
            for value in VALUES:
                try:
                    result = fn(value, constant)
                except EvalError:
                    assert not contains(true, value) and not contains(false, value), (value, op, constant)
                    continue
                assert contains(true, value) == result and contains(false, value) == (not result), (value, op, constant)
    assert (ANYTHING & ~ANYTHING).is_empty()
