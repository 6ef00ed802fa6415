"""The benchmark's contenders, nba included, agree on the synthetic workload and on the
history workload; the workloads are seeded.

No timings are asserted here: speed figures are printed by `nba bench`, never tested.
"""

from __future__ import annotations

import pytest

from benchmarks import history_workload, peers, synthetic

RULES, EVENTS = 50, 200


@pytest.fixture(scope="module")
def workload() -> synthetic.Workload:
    return synthetic.generate(RULES, EVENTS, seed=7, n_customers=50)


@pytest.fixture(scope="module")
def expected(workload) -> list:
    return synthetic.expected_actions(workload)


def builds() -> list:
    out = [pytest.param(peers.reference_module().build, id="reference")]
    for module in peers.peer_modules():
        for label, build in getattr(module, "variants", {module.name: module.build}).items():
            marks = [] if module.version else [pytest.mark.skip(reason=f"{module.name} is not installed")]
            out.append(pytest.param(build, id=label, marks=marks))
    return out


def test_the_same_seed_gives_the_same_workload():
    first, second = synthetic.generate(RULES, EVENTS, seed=7), synthetic.generate(RULES, EVENTS, seed=7)
    assert first.rules == second.rules
    assert first.profiles == second.profiles
    assert first.events == second.events
    assert synthetic.render_rules(first) == synthetic.render_rules(second)


def test_another_seed_gives_another_workload():
    assert synthetic.generate(RULES, EVENTS, seed=7).rules != synthetic.generate(RULES, EVENTS, seed=8).rules


def test_the_workload_has_the_promised_shape(workload, expected):
    assert len(workload.rules) == RULES and len(workload.events) == EVENTS
    assert all(2 <= len(rule.conditions) <= 3 for rule in workload.rules)
    assert any(c.op == "in" for rule in workload.rules for c in rule.conditions)
    decided = sum(1 for action in expected if action is not None) / EVENTS
    assert 0.1 <= decided <= 0.3


def test_expected_actions_is_the_plain_decision(workload, expected):
    plain = [synthetic.expected_action(workload, e, p) for e, p in workload.pairs()]
    assert plain == expected


def test_rendered_rules_say_what_the_data_says(workload):
    text = synthetic.render_rules(workload)
    rule = workload.rules[0]
    assert f"rule {rule.id} priority {rule.priority}" in text
    assert f'event.type == "{rule.event_type}"' in text
    assert text.count("\nend\n") == RULES


@pytest.mark.parametrize("build", builds())
def test_every_contender_makes_the_expected_decisions(build, workload, expected):
    decide = build(workload)
    got = [decide(event, profile) for event, profile in workload.pairs()]
    wrong = [(i, g, w) for i, (g, w) in enumerate(zip(got, expected)) if g != w]
    assert not wrong, f"{len(wrong)} wrong decisions, first: {wrong[:3]}"


def test_the_hand_written_history_rules_make_varied_decisions():
    data = history_workload.generate(customers=3, past_per_customer=200, decisions=200, seed=3)
    rules = history_workload.HandWrittenRules()
    for event in data.past:
        rules.add(event)
    actions = {rules.decide(dict(event)) for event in data.decisions}
    assert len(actions) >= 3


def test_nba_makes_the_expected_decisions(workload, expected, tmp_path):
    from nba.engine import Engine

    from benchmarks.eval_worker import write_rules

    engine = Engine.from_path(str(write_rules(workload, tmp_path)))
    for customer_id, profile in workload.profiles.items():
        engine.put_profile(customer_id, profile)
    got = [engine.decide(event).action for event in workload.events]
    wrong = [(i, g, w) for i, (g, w) in enumerate(zip(got, expected)) if g != w]
    assert not wrong, f"{len(wrong)} wrong decisions, first: {wrong[:3]}"


def test_nba_agrees_with_the_hand_written_history_rules(tmp_path):
    from nba.engine import Engine

    data = history_workload.generate(customers=3, past_per_customer=300, decisions=300, seed=5)
    path = tmp_path / "rules.rules"
    path.write_text(history_workload.RULES, encoding="utf-8")
    engine = Engine.from_path(str(path))
    rules = history_workload.HandWrittenRules()
    for event in data.past:
        engine.decide(event)
        rules.add(event)
    got = [engine.decide(event).action for event in data.decisions]
    want = [rules.decide(dict(event)) for event in data.decisions]
    wrong = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not wrong, f"{len(wrong)} wrong decisions, first: {wrong[:3]}"
    assert len(set(want)) >= 3
