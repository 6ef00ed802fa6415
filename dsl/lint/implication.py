"""Does one condition hold wherever another does? (``conditions.py`` formulas)

``implies(P, Q)`` is True only when it is proven that every state in ``P`` is in ``Q``:
for each conjunction ``p`` of ``P`` it searches for a state of ``p`` outside every
conjunction of ``Q`` (``p`` and, for each ``q``, one subject of ``q`` taken outside its
domain), backtracking over the choices. The search is exact for the domains, and has a
step budget: a search that runs out of it counts as "not proven", which can only hide a
warning.
"""

from __future__ import annotations

from nba.dsl.lint.conditions import DNF, Conj
from nba.dsl.lint.domains import ANYTHING

SEARCH_BUDGET = 20_000


class _OutOfBudget(Exception):
    pass


def implies(premise: DNF, conclusion: DNF, budget: int = SEARCH_BUDGET) -> bool:
    if not conclusion:
        return not premise
    steps = [budget]
    try:
        for p in premise:
            if _escapes(p, conclusion, 0, steps):
                return False
    except _OutOfBudget:
        return False
    return True


def _escapes(state: Conj, conclusion: DNF, index: int, steps: list) -> bool:
    """Is there a state in ``state`` outside conclusion[index:]?"""
    steps[0] -= 1
    if steps[0] < 0:
        raise _OutOfBudget
    if index == len(conclusion):
        return True
    q = conclusion[index]
    for key, dom in q.items():  # does the state already lie outside q?
        if (state.get(key, ANYTHING) & dom).is_empty():
            return _escapes(state, conclusion, index + 1, steps)
    for key, dom in q.items():  # else step outside q by one subject, each in turn
        outside = state.get(key, ANYTHING) & ~dom
        if not outside.is_empty():
            narrowed = dict(state)
            narrowed[key] = outside
            if _escapes(narrowed, conclusion, index + 1, steps):
                return True
    return False


def keysets(formula: DNF) -> list[frozenset]:
    return [frozenset(c) for c in formula]


def may_imply(premise_keys: list[frozenset], conclusion_keys: list[frozenset]) -> bool:
    """A quick necessary test before ``implies``: each conjunction of the premise must
    constrain every subject of some conjunction of the conclusion. (It misses a conclusion
    that holds without constraining anything, as ``x == null or x != null``: a weaker
    analysis, never a false warning.)"""
    return all(any(q <= p for q in conclusion_keys) for p in premise_keys)
