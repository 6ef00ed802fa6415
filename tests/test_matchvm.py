"""The Cython matcher (dsl/_matchvm.pyx) against its pure-Python twin, the generated matchers.

The same random rules are compiled twice, once for each matcher, and tested on the same
random events and profiles, whose fields take values of every kind (null, bool, whole
numbers small and beyond 2**53, floats, strings, lists, maps): both must give the same
matching rules in the same order and the same errors, message for message.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl.checker import check
from nba.dsl.compiler import Compiler, compile_ruleset
from nba.dsl.matchplan import IN_STRINGS, NUMBER_ORDER, OR, PYTHON
from nba.dsl.source import Diagnostics
from nba.dsl.syntax import parse_module
from nba.dsl.twins import matchvm, runtime

pytestmark = pytest.mark.skipif(matchvm is None, reason="the Cython matcher is not built (or NBA_PURE_PYTHON is set)")

FIELDS = ["event.a", "event.b", "event.s", "profile.p", "profile.q", "event.time", "event.missing"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([2**53, 2**53 + 1, -(2**60), 10**30]),
    st.floats(min_value=-6, max_value=6, allow_nan=False),
    st.sampled_from(["x", "y", "xy", "", "é", "日本", "Y", "a" * 40]),
    st.lists(st.sampled_from(["x", 1, None]), max_size=2),
    st.fixed_dictionaries({"k": st.sampled_from(["x", 1])}),
)
LITERALS = st.sampled_from(
    [
        "3",
        "-2",
        "0",
        "2.5",
        "9007199254740992",
        "9007199254740993",
        "99999999999999999999",
        '"x"',
        '"y"',
        '""',
        '"é"',
        "null",
        "true",
        "false",
        '["x", "y"]',
        '["xy"]',
        "[1, 2]",
        "2d",
    ]
)


def atoms():
    field = st.sampled_from(FIELDS)
    compare = st.builds(
        lambda f, op, lit, flip: f"{lit} {op} {f}" if flip else f"{f} {op} {lit}",
        field,
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        LITERALS,
        st.booleans(),
    )
    member = st.builds(
        lambda f, op, lit: f"{f} {op} {lit}",
        field,
        st.sampled_from(["in", "not in"]),
        st.sampled_from(['["x", "y"]', '["xy", "é"]', "[1, 2]", '"xyz"']),
    )
    python = st.sampled_from(
        [
            "event.a + 1 > 2",
            "len(event.s) > 1",
            'event.a.k == "x"',
            "coalesce(event.a, 1) == 1",
            "event.a == event.b",
            "profile.p < event.a",
        ]
    )
    return st.one_of(compare, member, field, python, st.sampled_from(["true", "false", "null"]))


def combined(leaves, max_leaves: int):
    """Conditions joining ``leaves`` with `and`, `or` and `not`."""
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"({a} and {b})", inner, inner),
            st.builds(lambda a, b: f"({a} or {b})", inner, inner),
            st.builds(lambda a: f"not ({a})", inner),
        ),
        max_leaves=max_leaves,
    )


def over_segments(names: list[str]):
    """Conditions whose leaves are atoms or uses of the segments ``names`` (half of them)."""
    return combined(st.one_of(atoms(), st.sampled_from(names)) if names else atoms(), 4)


CONDITIONS = combined(atoms(), 6)


def compile_both(conditions: list[str], segments: list[str] = ()):
    text = "".join(f"segment s{i} = {cond}\n" for i, cond in enumerate(segments))
    text += "".join(
        f'rule r{i} priority {i % 3}\n  when event.type == "t" and {cond}\n  then act{i}\nend\n'
        for i, cond in enumerate(conditions)
    )
    diagnostics = Diagnostics()
    module = parse_module("<test>", text, diagnostics)
    checked = check([module], diagnostics) if module is not None else None
    if diagnostics or checked is None:
        return None  # a condition the checker rejects (a kind it can tell is wrong)
    return compile_ruleset(checked, matcher_vm=matchvm), compile_ruleset(checked, matcher_vm=None)


def run(ruleset, event: dict, profile: dict):
    bucket = ruleset.bucket(event["type"])
    context = runtime.EvalContext(event, profile, event["time"], event["type"], {})
    errors: list = []
    matched = [index for matcher in bucket.matchers for index in matcher(context, errors)]
    return matched, [(index, type(exc).__name__, str(exc)) for index, exc in errors]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conditions=st.lists(CONDITIONS, min_size=1, max_size=6),
    samples=st.lists(st.tuples(VALUES, VALUES, VALUES, VALUES, VALUES), min_size=1, max_size=8),
)
def test_the_cython_matcher_matches_the_generated_one(conditions, samples):
    both = compile_both(conditions)
    if both is None:
        return
    with_vm, generated = both
    assert isinstance(with_vm.bucket("t").matchers[0], matchvm.BucketProgram)
    for a, b, s, p, q in samples:
        event = {"type": "t", "customer_id": "c", "time": 5.0, "a": a, "b": b, "s": s}
        profile = {"p": p, "q": q}
        assert run(with_vm, event, profile) == run(generated, event, profile), (conditions, event, profile)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.tuples(over_segments([]), over_segments(["s0"]), over_segments(["s0", "s1"])),  # no cycles
    conditions=st.lists(over_segments(["s0", "s1", "s2"]), min_size=1, max_size=5),
    samples=st.lists(st.tuples(VALUES, VALUES, VALUES, VALUES, VALUES), min_size=1, max_size=8),
)
def test_segments_tested_in_place_match_the_generated_ones(segments, conditions, samples):
    """Segments made of atoms are tested by the C matcher itself, the others through their
    generated function: either way as the generated matchers test them, errors included."""
    both = compile_both(conditions, list(segments))
    if both is None:
        return  # a kind the checker can tell is wrong
    with_vm, generated = both
    for a, b, s, p, q in samples:
        event = {"type": "t", "customer_id": "c", "time": 5.0, "a": a, "b": b, "s": s}
        profile = {"p": p, "q": q}
        assert run(with_vm, event, profile) == run(generated, event, profile), (segments, conditions, event, profile)


def test_a_segment_tested_in_place_fails_as_its_generated_function_does():
    with_vm, generated = compile_both(["s1 and event.b == 1", "not s1"], ["event.a", 's0 or event.s == "x"'])
    event = {"type": "t", "customer_id": "c", "time": 5.0, "a": 3, "b": 1, "s": "y"}
    expected = (
        [],
        [
            (1, "EvalError", "a segment needs true or false, not a number"),  # priority 1 first
            (0, "EvalError", "a segment needs true or false, not a number"),
        ],
    )
    assert run(with_vm, event, {}) == run(generated, event, {}) == expected


def test_a_segment_of_atoms_is_tested_in_c_and_one_with_an_aggregate_through_python():
    text = (
        'segment vip = profile.tier in ["gold", "platinum"] or profile.ltv >= 1000\n'
        "segment regular = count(visit within 1d) >= 3\n"
        'rule a\n  when event.type == "visit" and vip\n  then x\nend\n'
        'rule b\n  when event.type == "visit" and regular\n  then y\nend\n'
    )
    diagnostics = Diagnostics()
    checked = check([parse_module("<test>", text, diagnostics)], diagnostics)
    assert not diagnostics
    compiler = Compiler(checked, matcher_vm=matchvm)
    compiler.declare_segments()  # the generated functions the plan may call
    plan = compiler.match_plan("visit", [0, 1])
    kinds = [node[0] for node in plan.nodes]
    assert kinds.count(PYTHON) == 1  # the aggregate's segment, through its generated function
    assert kinds.count(OR) == 1 and kinds.count(IN_STRINGS) == 1 and kinds.count(NUMBER_ORDER) == 1  # vip


def test_a_ranked_bucket_stops_testing_at_the_first_match():
    with_vm, _generated = compile_both(["event.a > 1", "event.a + 1 > 1", "event.a > 0"])
    bucket = with_vm.bucket("t")
    context = runtime.EvalContext({"type": "t", "time": 1.0, "a": 5}, {}, 1.0, "t", {})
    errors: list = []
    matches = bucket.matchers[0](context, errors)
    assert next(matches) == 2  # priority 2 first
    assert errors == []
    assert list(matches) == [1, 0]


def test_a_failing_rule_is_an_error_and_the_others_are_still_tested():
    with_vm, generated = compile_both(["event.a > 1", 'event.a == "x"'])
    event = {"type": "t", "customer_id": "c", "time": 1.0, "a": "x"}
    matched, errors = run(with_vm, event, {})
    assert matched == [1]
    assert errors == [(0, "EvalError", "`>` compares two numbers or two strings, not a string and a number")]
    assert run(generated, event, {}) == (matched, errors)


def test_active_windows_are_tested_in_c():
    text = (
        'rule early priority 2\n  when event.type == "t"\n  then a\n  active from 2026-01-01 to 2026-02-01\nend\n'
        'rule late priority 1\n  when event.type == "t"\n  then b\n  active from 2026-02-01\nend\n'
    )
    diagnostics = Diagnostics()
    checked = check([parse_module("<test>", text, diagnostics)], diagnostics)
    assert not diagnostics
    for ruleset in (compile_ruleset(checked, matcher_vm=matchvm), compile_ruleset(checked, matcher_vm=None)):
        for t, expected in ((1767225600.0, [0]), (1769904000.0, [1]), (1767225599.0, [])):
            assert run(ruleset, {"type": "t", "time": t}, {}) == (expected, [])


# ---- aggregates: the row filter against the generated loops ------------------------------

PAST_FIELDS = ["a", "s", "time"]
WHERE_ATOMS = st.one_of(
    st.builds(
        lambda f, op, lit: f"{f} {op} {lit}",
        st.sampled_from(PAST_FIELDS),
        st.sampled_from(["==", "!=", "<", ">="]),
        st.sampled_from(["3", "2.5", '"x"', "null", "true", "9007199254740993"]),
    ),
    st.builds(lambda f, op: f'{f} {op} ["x", "y"]', st.sampled_from(PAST_FIELDS), st.sampled_from(["in", "not in"])),
    st.sampled_from(["a", "s", "a + 1 > 2", "a == event.a", "event.s != s", "time == event.time", "a == profile.p"]),
)
WHERES = combined(WHERE_ATOMS, 4)
AGGREGATES = [
    "count(t where W within 1h)",
    "sum(t.a where W within 1h)",
    "avg(t.a where W within 1h)",
    "min(t.a where W within 1h)",
    "max(t.s where W within 1h)",
    "distinct(t.s where W within 1h)",
    "since(t where W within 1h)",
]


def decide_both(where: str, past: list[tuple], event: dict):
    from nba.engine.procedure import evaluate
    from nba.engine.state import CustomerState, History

    params = ", ".join(f"v{i} = {agg.replace('W', where)}" for i, agg in enumerate(AGGREGATES))
    both = compile_both_text(f'rule r priority 1\n  when event.type == "t"\n  then act with {params}\nend\n')
    if both is None:
        return None
    history = {"t": History([p[0] for p in past], {"a": [p[1] for p in past], "s": [p[2] for p in past]})}
    state = CustomerState({"p": 1}, history, [])
    out = []
    for ruleset in both:
        outcome = evaluate(ruleset, event, state)
        out.append(([c.params for c in outcome.choices], outcome.errors))
    return out


def compile_both_text(text: str):
    diagnostics = Diagnostics()
    module = parse_module("<test>", text, diagnostics)
    checked = check([module], diagnostics) if module is not None else None
    if diagnostics or checked is None:
        return None
    return compile_ruleset(checked, matcher_vm=matchvm), compile_ruleset(checked, matcher_vm=None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=WHERES,
    past=st.lists(st.tuples(st.integers(0, 3600), VALUES, VALUES), max_size=12).map(
        lambda rows: sorted(rows, key=lambda row: row[0])
    ),
    current=st.tuples(VALUES, VALUES),
)
def test_aggregates_with_the_row_filter_match_the_generated_loops(where, past, current):
    event = {"type": "t", "customer_id": "c", "time": 3000.0, "a": current[0], "s": current[1]}
    both = decide_both(where, [(float(t), a, s) for t, a, s in past], event)
    if both is None:
        return
    with_vm, generated = both
    assert with_vm == generated, (where, past, event)


def test_a_where_on_past_fields_against_literals_uses_the_row_filter():
    both = compile_both_text(
        'rule r priority 1\n  when event.type == "t" and count(t where a > 1 within 1h) > 0\n  then act\nend\n'
    )
    with_vm, generated = both
    assert "_count_rows(" in with_vm.python_source and "_count_rows(" not in generated.python_source
    both = compile_both_text(
        'rule r priority 1\n  when event.type == "t" and count(t where a == event.a within 1h) > 0\n  then act\nend\n'
    )
    assert "_count_rows(" in both[0].python_source  # a past field against an event field
    both = compile_both_text(
        'rule r priority 1\n  when event.type == "t" and count(t where a == event.a + 1 within 1h) > 0\n  then act\nend\n'
    )
    assert "_count_rows(" not in both[0].python_source  # arithmetic: the generated loop
