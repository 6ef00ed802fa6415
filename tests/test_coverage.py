"""Replay coverage: what each rule did over a replay, and which condition kept it out."""

from __future__ import annotations

import io
import json

from nba.engine.coverage import Coverage
from nba.engine.replay import replay

from dsl_helpers import T0, engine_for

RULES = """
rule vip_upsell
  priority 50
  when event.type == "page_view" and profile.lifetime_value >= 1000 and event.price > 10
  then upsell via web
end
rule banner
  priority 10
  when event.type == "page_view"
  then banner via web
  cap 1 per 1h
end
"""


def run(tmp_path, events, **options):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    engine = engine_for(RULES)
    engine.put_profile("rich", {"lifetime_value": 5000})
    code = replay(engine, str(path), out, err, **options)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def views(n):
    return [{"customer_id": f"c{i % 3}", "type": "page_view", "price": 20, "time": T0 + i} for i in range(n)]


def test_the_summary_names_the_condition_that_kept_a_rule_out(tmp_path):
    code, decisions, summary = run(tmp_path, views(200))
    assert code == 0
    assert "vip_upsell: chosen 0 of 200 page_view events; `profile.lifetime_value >= 1000` false in 100%" in summary
    table = summary.split("coverage (passed over by reason):")[1]
    banner_row = next(line for line in table.splitlines() if line.strip().startswith("banner"))
    assert banner_row.split()[1:4] == ["200", "200", "3"]  # events, matched, chosen (once an hour, 3 customers)


def test_coverage_does_not_change_what_is_printed(tmp_path):
    events = views(30) + [{"customer_id": "rich", "type": "page_view", "price": 20, "time": T0 + 99}]
    _code, with_coverage, _ = run(tmp_path, events)
    _code, without, summary = run(tmp_path, events, coverage=False)
    assert with_coverage == without and "coverage" not in summary
    assert all("trace" not in decision for decision in with_coverage)
    assert with_coverage[-1]["rule"] == "vip_upsell"


def test_the_coverage_counts_passed_over_reasons_and_most_often_false():
    coverage = Coverage(["r"])
    conditions = [{"text": "a", "at": "x:1:1", "value": True}, {"text": "b", "at": "x:1:7", "value": False}]
    coverage.add("t", [{"rule": "r", "matched": False, "outcome": "not_matched", "conditions": conditions}])
    coverage.add(
        "t",
        [
            {
                "rule": "r",
                "matched": True,
                "outcome": "passed_over",
                "reason": "policy email: cap 1 per 1d",
                "conditions": [dict(c, value=True) for c in conditions],
            }
        ],
    )
    (row,) = coverage.to_dict()
    assert row["events"] == 2 and row["matched"] == 1 and row["passed_over"] == {"policy": 1}
    assert row["most_often_false"] == {"condition": "b", "share": 0.5}
